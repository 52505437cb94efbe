// Reading and writing the safetensors format (weights, checkpoints, fixtures).
//
// Layout of a file:
//   bytes 0..<8      N, the header length, unsigned 64-bit little-endian
//   bytes 8..<8+N    UTF-8 JSON object (may be padded with trailing spaces):
//                      {"name": {"dtype": "F32", "shape": [2, 3],
//                                "data_offsets": [begin, end]}, ...,
//                       "__metadata__": {"key": "value", ...}}
//   bytes 8+N...     the data section; offsets are relative to its start
// All tensor data is little-endian and densely packed (row-major).

import Foundation

// MARK: - HostTensor

/// A tensor held in host memory as raw little-endian bytes, exactly as it is
/// stored in a safetensors file.
public struct HostTensor: Sendable, Equatable {
    /// Element types this module understands (a subset of safetensors' dtypes).
    public enum DType: String, Sendable, CaseIterable {
        case f32 = "F32", f64 = "F64", i64 = "I64", i32 = "I32", u8 = "U8"

        /// Bytes per element.
        public var byteSize: Int {
            switch self {
            case .f32, .i32: return 4
            case .f64, .i64: return 8
            case .u8: return 1
            }
        }
    }

    public var dtype: DType
    /// Dimensions, outermost first. `[]` is a scalar (one element).
    public var shape: [Int]
    /// Raw little-endian element data, `count * dtype.byteSize` bytes.
    public var bytes: [UInt8]

    /// Wraps raw bytes. The byte count must match the shape and dtype.
    public init(dtype: DType, shape: [Int], bytes: [UInt8]) {
        let count = HostTensor.elementCount(of: shape)
        precondition(bytes.count == count * dtype.byteSize,
                     "HostTensor: \(bytes.count) bytes do not match \(dtype.rawValue) \(shape) (\(count * dtype.byteSize) bytes)")
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    public init(floats: [Float], shape: [Int]) { self.init(elements: floats, dtype: .f32, shape: shape) }
    public init(doubles: [Double], shape: [Int]) { self.init(elements: doubles, dtype: .f64, shape: shape) }
    public init(int64s: [Int64], shape: [Int]) { self.init(elements: int64s, dtype: .i64, shape: shape) }
    public init(int32s: [Int32], shape: [Int]) { self.init(elements: int32s, dtype: .i32, shape: shape) }
    public init(uint8s: [UInt8], shape: [Int]) { self.init(elements: uint8s, dtype: .u8, shape: shape) }

    /// Copies `floats.count` floats from memory (e.g. a runtime buffer) without
    /// going through an intermediate Swift array.
    public init(floats: UnsafeBufferPointer<Float>, shape: [Int]) {
        precondition(floats.count == HostTensor.elementCount(of: shape),
                     "HostTensor: \(floats.count) floats do not match shape \(shape)")
        self.dtype = .f32
        self.shape = shape
        self.bytes = [UInt8](UnsafeRawBufferPointer(floats))
    }

    /// Generic byte copy for the typed initialisers (host is little-endian).
    private init<T>(elements: [T], dtype: DType, shape: [Int]) {
        precondition(MemoryLayout<T>.stride == dtype.byteSize)
        precondition(elements.count == HostTensor.elementCount(of: shape),
                     "HostTensor: \(elements.count) elements do not match shape \(shape)")
        self.dtype = dtype
        self.shape = shape
        self.bytes = elements.withUnsafeBytes { [UInt8]($0) }
    }

    /// Number of elements: the product of `shape` (1 for a scalar).
    public var count: Int { HostTensor.elementCount(of: shape) }

    /// Product of the dimensions; traps on negative dimensions or overflow.
    public static func elementCount(of shape: [Int]) -> Int {
        var n = 1
        for d in shape {
            precondition(d >= 0, "negative dimension in shape \(shape)")
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            precondition(!overflow, "element count of shape \(shape) overflows")
            n = p
        }
        return n
    }

    /// The elements as `Float`, converting from F64/I64/I32/U8 if needed.
    public var floats: [Float] {
        switch dtype {
        case .f32:
            return [Float](unsafeUninitializedCapacity: count) { out, initialized in
                copyFloats(into: out)
                initialized = out.count
            }
        case .f64: return mapElements(Double.self) { Float($0) }
        case .i64: return mapElements(Int64.self) { Float($0) }
        case .i32: return mapElements(Int32.self) { Float($0) }
        case .u8: return mapElements(UInt8.self) { Float($0) }
        }
    }

    /// The elements as `Int64`. Floating-point values are truncated toward
    /// zero; NaN becomes 0 and out-of-range values saturate (a getter cannot
    /// throw, and labels/indices are never such values in practice).
    public var int64s: [Int64] {
        switch dtype {
        case .i64: return mapElements(Int64.self) { $0 }
        case .i32: return mapElements(Int32.self) { Int64($0) }
        case .u8: return mapElements(UInt8.self) { Int64($0) }
        case .f32: return mapElements(Float.self) { HostTensor.saturatingInt64(Double($0)) }
        case .f64: return mapElements(Double.self) { HostTensor.saturatingInt64($0) }
        }
    }

    /// Calls `body` with the data as floats. For F32 this is zero-copy (the
    /// tensor's own storage); other dtypes are converted into a temporary.
    public func withUnsafeFloatBuffer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        if dtype == .f32 {
            return try bytes.withUnsafeBytes { raw in
                // Array storage is at least 16-byte aligned; check anyway so a
                // future storage change cannot cause misaligned loads.
                if Int(bitPattern: raw.baseAddress) % MemoryLayout<Float>.alignment == 0 {
                    return try raw.withMemoryRebound(to: Float.self, body)
                }
                let copy = floats
                return try copy.withUnsafeBufferPointer(body)
            }
        }
        let converted = floats
        return try converted.withUnsafeBufferPointer(body)
    }

    /// Copies (converting if needed) all `count` elements into `destination`,
    /// which must hold exactly `count` floats. F32 is a single memcpy.
    public func copyFloats(into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(destination.count == count,
                     "copyFloats: destination holds \(destination.count) floats, tensor has \(count)")
        guard let base = destination.baseAddress else { return }
        copyFloats(into: base)
    }

    /// Copies (converting if needed) all `count` elements to `destination`,
    /// which must have room for `count` floats.
    public func copyFloats(into destination: UnsafeMutablePointer<Float>) {
        // `bytes` is a public var; never copy more than `count` floats' worth.
        precondition(bytes.count == count * dtype.byteSize,
                     "HostTensor: \(bytes.count) bytes do not match \(dtype.rawValue) \(shape)")
        if dtype == .f32 {
            bytes.withUnsafeBytes { raw in
                guard let src = raw.baseAddress else { return }
                UnsafeMutableRawPointer(destination).copyMemory(from: src, byteCount: raw.count)
            }
            return
        }
        let converted = floats
        converted.withUnsafeBufferPointer { src in
            destination.update(from: src.baseAddress!, count: src.count)
        }
    }

    /// Reads every element as `T` (unaligned-safe) and maps it.
    private func mapElements<T, U>(_ type: T.Type, _ transform: (T) -> U) -> [U] {
        bytes.withUnsafeBytes { raw in
            let stride = MemoryLayout<T>.stride
            let n = raw.count / stride
            return [U](unsafeUninitializedCapacity: n) { out, initialized in
                for i in 0 ..< n {
                    out.initializeElement(at: i, to: transform(raw.loadUnaligned(fromByteOffset: i * stride, as: T.self)))
                }
                initialized = n
            }
        }
    }

    private static func saturatingInt64(_ x: Double) -> Int64 {
        if x.isNaN { return 0 }
        if x >= 9_223_372_036_854_775_808.0 { return .max }
        if x < -9_223_372_036_854_775_808.0 { return .min }
        return Int64(x)
    }
}

extension HostTensor: CustomStringConvertible {
    /// dtype, shape and the first few values (enough to read a test failure).
    public var description: String {
        let shown = 6
        guard bytes.count == count * dtype.byteSize else {
            return "HostTensor(\(dtype.rawValue), shape: \(shape), \(bytes.count) bytes (inconsistent))"
        }
        let head = HostTensor(dtype: dtype, shape: [min(count, shown)],
                              bytes: Array(bytes.prefix(min(count, shown) * dtype.byteSize)))
        let values = (dtype == .f32 || dtype == .f64) ? head.floats.map { "\($0)" } : head.int64s.map { "\($0)" }
        let more = count > shown ? ", ..." : ""
        return "HostTensor(\(dtype.rawValue), shape: \(shape), values: [\(values.joined(separator: ", "))\(more)])"
    }
}

// MARK: - Errors

/// A safetensors read or write failure. The message always names the file and,
/// where one is involved, the tensor.
public struct SafeTensorsError: Error, LocalizedError, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        /// The file could not be opened, read, or written.
        case io
        /// Shorter than the 8-byte header-length prefix.
        case truncated
        /// The header length points past the end of the file.
        case headerOutOfRange
        /// The header is not valid JSON.
        case invalidJSON
        /// Valid JSON, but not the expected structure (also wrong field types).
        case invalidHeader
        /// A dtype this module does not know.
        case unknownDType
        /// A shape that is not a list of non-negative integers.
        case invalidShape
        /// data_offsets malformed or beyond the data section.
        case offsetsOutOfRange
        /// Two tensors' byte ranges overlap.
        case overlappingData
        /// data_offsets length differs from shape * dtype size.
        case sizeMismatch
        /// __metadata__ is not an object of strings.
        case invalidMetadata
        /// Writing: a tensor that cannot be stored (bad byte count, reserved name).
        case invalidTensor
    }

    public var kind: Kind
    public var path: String
    public var tensor: String?
    public var detail: String

    public init(_ kind: Kind, path: String, tensor: String? = nil, _ detail: String) {
        self.kind = kind
        self.path = path
        self.tensor = tensor
        self.detail = detail
    }

    public var description: String {
        var text = "safetensors file '\(path)'"
        if let tensor { text += ", tensor '\(tensor)'" }
        return text + ": " + detail
    }

    public var errorDescription: String? { description }
}

// MARK: - Reading and writing

public enum SafeTensors {
    /// The reserved header key holding string metadata.
    public static let metadataKey = "__metadata__"

    /// Reads all tensors from a file.
    public static func read(_ path: String) throws -> [String: HostTensor] {
        try readWithMetadata(path).tensors
    }

    /// Reads all tensors and the `__metadata__` string map from a file.
    public static func readWithMetadata(_ path: String) throws -> (tensors: [String: HostTensor], metadata: [String: String]) {
        let file: [UInt8]
        do {
            file = try FileIO.readAll(path)
        } catch {
            throw SafeTensorsError(.io, path: path, "cannot read: \(error.reason)")
        }
        return try decode(file, source: path)
    }

    /// Parses safetensors bytes held in memory. `source` names them in errors.
    public static func decode(_ file: [UInt8], source: String = "<memory>") throws
        -> (tensors: [String: HostTensor], metadata: [String: String])
    {
        let path = source
        guard file.count >= 8 else {
            throw SafeTensorsError(.truncated, path: path,
                                   "truncated: \(file.count) bytes, shorter than the 8-byte header length")
        }
        var headerLength: UInt64 = 0
        for i in 0 ..< 8 { headerLength |= UInt64(file[i]) << (8 * UInt64(i)) }
        let available = file.count - 8
        guard headerLength <= UInt64(available) else {
            throw SafeTensorsError(.headerOutOfRange, path: path,
                                   "header length \(headerLength) exceeds the \(available) bytes after the length field (truncated or not a safetensors file)")
        }
        let dataStart = 8 + Int(headerLength)
        let dataSize = file.count - dataStart

        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: Data(file[8 ..< dataStart]))
        } catch {
            throw SafeTensorsError(.invalidJSON, path: path, "header is not valid JSON")
        }
        guard case .object(let entries) = root else {
            throw SafeTensorsError(.invalidHeader, path: path, "header is not a JSON object")
        }

        var metadata: [String: String] = [:]
        var ranges: [(begin: Int, end: Int, name: String)] = []
        var specs: [(name: String, dtype: HostTensor.DType, shape: [Int], begin: Int, end: Int)] = []

        for (name, value) in entries {
            if name == metadataKey {
                metadata = try parseMetadata(value, path: path)
                continue
            }
            guard case .object(let fields) = value else {
                throw SafeTensorsError(.invalidHeader, path: path, tensor: name, "entry is not a JSON object")
            }
            guard case .string(let dtypeName)? = fields["dtype"] else {
                throw SafeTensorsError(.invalidHeader, path: path, tensor: name, "missing or non-string \"dtype\"")
            }
            guard let dtype = HostTensor.DType(rawValue: dtypeName) else {
                let known = HostTensor.DType.allCases.map(\.rawValue).joined(separator: ", ")
                throw SafeTensorsError(.unknownDType, path: path, tensor: name,
                                       "unknown dtype '\(dtypeName)' (supported: \(known))")
            }
            guard case .array(let dims)? = fields["shape"] else {
                throw SafeTensorsError(.invalidShape, path: path, tensor: name, "missing or non-list \"shape\"")
            }
            var shape: [Int] = []
            for d in dims {
                guard case .int(let v) = d, v >= 0 else {
                    throw SafeTensorsError(.invalidShape, path: path, tensor: name,
                                           "shape must be a list of non-negative integers")
                }
                shape.append(v)
            }
            guard case .array(let offsets)? = fields["data_offsets"], offsets.count == 2,
                  case .int(let begin) = offsets[0], case .int(let end) = offsets[1]
            else {
                throw SafeTensorsError(.offsetsOutOfRange, path: path, tensor: name,
                                       "\"data_offsets\" must be a list of two integers")
            }
            guard begin >= 0, begin <= end, end <= dataSize else {
                throw SafeTensorsError(.offsetsOutOfRange, path: path, tensor: name,
                                       "data_offsets [\(begin), \(end)] out of range for a data section of \(dataSize) bytes")
            }
            // Element count, with overflow treated as "does not fit".
            var expected: Int? = dtype.byteSize
            for d in shape {
                if let e = expected {
                    let (p, overflow) = e.multipliedReportingOverflow(by: d)
                    expected = overflow ? nil : p
                }
            }
            guard let expectedBytes = expected, expectedBytes == end - begin else {
                let need = expected.map { "\($0) bytes" } ?? "more bytes than addressable"
                throw SafeTensorsError(.sizeMismatch, path: path, tensor: name,
                                       "data_offsets [\(begin), \(end)] cover \(end - begin) bytes but \(dtype.rawValue) \(shape) needs \(need)")
            }
            specs.append((name, dtype, shape, begin, end))
            if end > begin { ranges.append((begin, end, name)) }
        }

        // Overlap check: after sorting by start, each range must begin at or
        // after the previous one ends. Empty tensors occupy no bytes.
        ranges.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        for i in ranges.indices.dropFirst() where ranges[i].begin < ranges[i - 1].end {
            let a = ranges[i - 1], b = ranges[i]
            throw SafeTensorsError(.overlappingData, path: path, tensor: b.name,
                                   "data_offsets [\(b.begin), \(b.end)] overlap tensor '\(a.name)' [\(a.begin), \(a.end)]")
        }

        // Hot path: one contiguous copy per tensor.
        var tensors: [String: HostTensor] = [:]
        tensors.reserveCapacity(specs.count)
        for spec in specs {
            let bytes = Array(file[(dataStart + spec.begin) ..< (dataStart + spec.end)])
            tensors[spec.name] = HostTensor(dtype: spec.dtype, shape: spec.shape, bytes: bytes)
        }
        return (tensors, metadata)
    }

    private static func parseMetadata(_ value: JSONValue, path: String) throws -> [String: String] {
        guard case .object(let fields) = value else {
            throw SafeTensorsError(.invalidMetadata, path: path, "\"__metadata__\" is not a JSON object")
        }
        var result: [String: String] = [:]
        for (key, v) in fields {
            guard case .string(let s) = v else {
                throw SafeTensorsError(.invalidMetadata, path: path, "\"__metadata__\" value for '\(key)' is not a string")
            }
            result[key] = s
        }
        return result
    }

    /// Writes tensors (and optional string metadata) to `path`, atomically:
    /// the bytes go to a temporary file in the same directory which is then
    /// renamed into place. Parent directories are created as needed.
    public static func write(_ tensors: [String: HostTensor], metadata: [String: String] = [:], to path: String) throws {
        let bytes = try encode(tensors, metadata: metadata, source: path)
        do {
            try FileIO.writeAtomically(bytes, to: path)
        } catch {
            throw SafeTensorsError(.io, path: path, "cannot write: \(error.reason)")
        }
    }

    /// The exact bytes `write` would store. Deterministic: tensors are sorted
    /// by name in both header and data section, metadata keys are sorted, the
    /// JSON is compact, and the header is space-padded to a multiple of 8 so
    /// the data section starts 8-byte aligned.
    public static func encode(_ tensors: [String: HostTensor], metadata: [String: String] = [:],
                              source: String = "<memory>") throws -> [UInt8]
    {
        let names = tensors.keys.sorted()
        var header = "{"
        var first = true
        if !metadata.isEmpty {
            header += jsonString(metadataKey) + ":{"
            header += metadata.keys.sorted().map { jsonString($0) + ":" + jsonString(metadata[$0]!) }.joined(separator: ",")
            header += "}"
            first = false
        }
        var offset = 0
        for name in names {
            let t = tensors[name]!
            if name == metadataKey {
                throw SafeTensorsError(.invalidTensor, path: source, tensor: name, "name is reserved for metadata")
            }
            if t.shape.contains(where: { $0 < 0 }) {
                throw SafeTensorsError(.invalidTensor, path: source, tensor: name, "negative dimension in shape \(t.shape)")
            }
            // `bytes` is a public var, so it may have been changed after init.
            let expected = t.count * t.dtype.byteSize
            if t.bytes.count != expected {
                throw SafeTensorsError(.invalidTensor, path: source, tensor: name,
                                       "holds \(t.bytes.count) bytes but \(t.dtype.rawValue) \(t.shape) needs \(expected)")
            }
            if !first { header += "," }
            first = false
            let shape = t.shape.map(String.init).joined(separator: ",")
            header += jsonString(name) + ":{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + expected)]}"
            offset += expected
        }
        header += "}"

        var headerBytes = Array(header.utf8)
        let padding = (8 - headerBytes.count % 8) % 8
        headerBytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: padding))

        var out: [UInt8] = []
        out.reserveCapacity(8 + headerBytes.count + offset)
        let n = UInt64(headerBytes.count)
        for i in 0 ..< 8 { out.append(UInt8(truncatingIfNeeded: n >> (8 * UInt64(i)))) }
        out.append(contentsOf: headerBytes)
        for name in names { out.append(contentsOf: tensors[name]!.bytes) }
        return out
    }

    /// JSON string literal with the escapes RFC 8259 requires; everything else
    /// is emitted as raw UTF-8 (as Python's safetensors does).
    static func jsonString(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

// MARK: - JSON value

/// A strictly typed JSON value. Decoding through Codable (rather than
/// JSONSerialization's NSNumber) keeps booleans, integers and floats apart,
/// so `"shape": [true]` or `[2.5]` is rejected instead of silently accepted.
enum JSONValue: Decodable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }
}
