#!/usr/bin/env python3
"""Packs a banana-detection data set into MXNet RecordIO, as im2rec packs detection data.

    scripts/pack_recordio.py SRC OUT

SRC holds bananas_train/ and bananas_val/ (each images/ and label.csv, pixel boxes, several
rows per image allowed), or is one such split folder. OUT gets train.rec, train.idx, val.rec
and val.idx (only train.* for a single split), and classes.txt when the source has one.

Each record: uint32 magic 0xced7230a, uint32 lrecord (continuation flag << 29 | length), the
payload zero-padded to 4 bytes. Payload: IRHeader {uint32 flag = number of label floats;
float 0; uint64 id = image number; uint64 id2 = 0}, the label [4, 5, width, height, then
class, xmin, ymin, xmax, ymax in 0..1 for each object], then the image file's bytes as they
are (PNG or JPEG). A payload holding the magic at a 4-byte aligned position is cut there
into parts (flags 1, 2..., 3) without that magic, as MXNet's writer does. The .idx file has a
line "number<TAB>byte offset" per record. Plain Python 3; no mxnet needed.
"""

import csv
import os
import shutil
import struct
import sys

MAGIC = 0xCED7230A
HEADER = ["img_name", "label", "xmin", "ymin", "xmax", "ymax"]


def image_size(data, path):
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame marker."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                break
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            length = struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return width, height
            i += 2 + length
    sys.exit(f"{path}: not a PNG or JPEG whose size can be read")


def read_split(folder):
    """[(name, [(class, xmin, ymin, xmax, ymax) in pixels])] in label.csv order."""
    label_file = os.path.join(folder, "label.csv")
    images = {}
    with open(label_file, newline="") as f:
        rows = csv.reader(f)
        header = [h.strip() for h in next(rows, [])]
        if header != HEADER:
            sys.exit(f"{label_file}:1: expected the header {','.join(HEADER)}")
        for line, row in enumerate(rows, start=2):
            if not row or all(not field.strip() for field in row):
                continue
            if len(row) != 6:
                sys.exit(f"{label_file}:{line}: expected 6 fields, found {len(row)}")
            name = row[0].strip()
            images.setdefault(name, []).append((int(row[1]),) + tuple(float(v) for v in row[2:]))
    return list(images.items())


def record(payload):
    """The bytes of one logical record: one part, or several when the payload holds the magic."""
    magic = struct.pack("<I", MAGIC)
    parts, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == magic:
            parts.append(payload[start:i])
            start = i + 4
    parts.append(payload[start:])
    out = bytearray()
    for k, part in enumerate(parts):
        flag = 0 if len(parts) == 1 else (1 if k == 0 else (3 if k == len(parts) - 1 else 2))
        out += magic + struct.pack("<I", flag << 29 | len(part)) + part + b"\0" * (-len(part) % 4)
    return bytes(out)


def pack_split(folder, rec_path, idx_path):
    entries = read_split(folder)
    with open(rec_path, "wb") as rec, open(idx_path, "w") as idx:
        for number, (name, boxes) in enumerate(entries):
            path = os.path.join(folder, "images", name)
            with open(path, "rb") as f:
                data = f.read()
            width, height = image_size(data, path)
            label = [4.0, 5.0, float(width), float(height)]
            for cls, xmin, ymin, xmax, ymax in boxes:
                label += [float(cls), xmin / width, ymin / height, xmax / width, ymax / height]
            header = struct.pack("<IfQQ", len(label), 0.0, number, 0)
            idx.write(f"{number}\t{rec.tell()}\n")
            rec.write(record(header + struct.pack(f"<{len(label)}f", *label) + data))
    print(f"{rec_path}: {len(entries)} records")


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} SRC OUT")
    src, out = sys.argv[1], sys.argv[2]
    if os.path.isfile(os.path.join(src, "label.csv")):
        splits = [("train", src)]
    else:
        splits = [(s, os.path.join(src, f"bananas_{s}")) for s in ("train", "val")]
        for _, folder in splits:
            if not os.path.isfile(os.path.join(folder, "label.csv")):
                sys.exit(f"{folder}/label.csv: missing (expected SRC/bananas_train/ and SRC/bananas_val/)")
    os.makedirs(out, exist_ok=True)
    for split, folder in splits:
        pack_split(folder, os.path.join(out, f"{split}.rec"), os.path.join(out, f"{split}.idx"))
    classes = os.path.join(splits[0][1], "classes.txt")
    if os.path.isfile(classes):
        shutil.copyfile(classes, os.path.join(out, "classes.txt"))


if __name__ == "__main__":
    main()
