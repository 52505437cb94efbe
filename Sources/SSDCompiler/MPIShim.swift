import Foundation
import SSDABI

extension Toolchain {
    /// The MPI shim (Runtime/mpi/ssd_mpi.c) built with `mpicc` into a shared library of its
    /// own, cached like the model libraries by a hash of its source and of mpicc's
    /// configuration. Only a run under mpirun builds and loads it: neither ssdc nor the model
    /// libraries link MPI, so without Open MPI everything else works as before.
    public static func mpiShim() throws -> String {
        let env = ProcessInfo.processInfo.environment
        let name = env["SSDC_MPICC"].flatMap { $0.isEmpty ? nil : $0 } ?? "mpicc"
        guard let mpicc = Shell.which(name) else {
            throw ToolchainError("running under mpirun, but \(name) is not found: install Open MPI's compiler wrapper (apt-get install libopenmpi-dev) or set SSDC_MPICC")
        }
        let source = try runtimeDirectory() + "/mpi/ssd_mpi.c"
        var hasher = ContentHash()
        hasher.add(mpicc)
        hasher.add((try? Shell.run(mpicc, ["--showme"]))?.stdout ?? "")
        hasher.add(try AtomicFile.read(source))
        let cache = CacheDirectory.path + "/lib"
        try AtomicFile.makeDirectory(cache)
        let lib = "\(cache)/libssdc-mpi-\(hasher.hex).so"
        if ELFFile.problem(lib, kind: .sharedLibrary) == nil { return lib }
        let tmp = AtomicFile.temporaryPath(for: lib)
        try buildVerified(tmp, into: lib, kind: .sharedLibrary, toolchain: ToolchainInfo(cc: mpicc, version: "", flags: []),
                          arguments: ["-std=c11", "-O2", "-fPIC", "-shared", source, "-o", tmp])
        return lib
    }
}
