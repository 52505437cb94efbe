#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SSDABI

/// Runs a program we do not trust to finish (a user's model program) in its own process
/// group, with a time limit. The whole group is killed when the limit passes, when the
/// program exits (so nothing it started outlives it), and when ssdc is interrupted or
/// terminated (SIGINT, SIGTERM, SIGHUP) while it waits; if ssdc is killed outright
/// (SIGKILL), the kernel kills the program (its parent-death signal, set by setpriv).
public enum ProcessGroup {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        /// The time limit passed and the group was killed.
        public var timedOut: Bool
    }

    /// Runs `executable` (a path) with `arguments`, stdin from /dev/null, capturing its
    /// output, for at most `timeout` seconds.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String],
                           timeout: Double) throws -> Result {
        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else {
            throw ToolchainError("cannot run \(executable): \(AtomicFile.reason(errno))")
        }
        // Not inherited by other children ssdc starts (a leaked write end would keep a pipe open).
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)  // a new group whose id is the child's pid

        // setpriv (util-linux) makes the kernel kill the program if ssdc dies, even by
        // SIGKILL, which no handler sees; the signal survives its exec of the program.
        let command = FileManager.default.isExecutableFile(atPath: setpriv)
            ? [setpriv, "--pdeathsig", "KILL", "--", executable] + arguments : [executable] + arguments
        let argv = command.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }

        var pid: pid_t = 0
        let spawned = installForwarding {
            let code = posix_spawn(&pid, command[0], &actions, &attributes, argv, envp)
            if code == 0 { activeGroup = pid }
            return code
        }
        close(outPipe[1]); close(errPipe[1])
        defer { close(outPipe[0]); close(errPipe[0]) }
        guard spawned == 0 else {
            restoreForwarding()
            throw ToolchainError("cannot run \(executable): \(AtomicFile.reason(spawned))")
        }

        let deadline = Date().addingTimeInterval(timeout)
        var output = PipeReader(fds: [outPipe[0], errPipe[0]])
        var timedOut = false
        while !hasExited(pid) {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { timedOut = true; break }
            output.poll(milliseconds: Int32(min(remaining, 0.05) * 1000) + 1)
        }
        // Kill the group before reaping the leader, so its id cannot have been reused.
        kill(-pid, SIGKILL)
        output.drain()
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        activeGroup = 0
        restoreForwarding()
        let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Result(status: exit, stdout: String(decoding: output.data[0], as: UTF8.self),
                      stderr: String(decoding: output.data[1], as: UTF8.self), timedOut: timedOut)
    }

    static let setpriv = "/usr/bin/setpriv"

    /// Whether the child has exited, without reaping it (WNOWAIT): its process group
    /// stays ours to kill.
    private static func hasExited(_ pid: pid_t) -> Bool {
        var info = siginfo_t()
        // With WNOHANG and no change, waitid leaves the zeroed siginfo as it is.
        return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_signo == SIGCHLD
    }

    // MARK: ending the group with ssdc

    /// The group being waited for (0: none); read by the signal handler.
    nonisolated(unsafe) private static var activeGroup: pid_t = 0
    nonisolated(unsafe) private static var previousHandlers: [Int32: sighandler_t?] = [:]
    private static let forwardedSignals = [SIGINT, SIGTERM, SIGHUP]

    /// Installs handlers that kill the active group and then end ssdc as the signal would
    /// have, runs `body` (the spawn), and leaves the handlers in place until
    /// `restoreForwarding`. A signal ssdc ignores (nohup) stays ignored.
    private static func installForwarding(_ body: () -> Int32) -> Int32 {
        for sig in forwardedSignals {
            let old = signal(sig, { sig in
                if ProcessGroup.activeGroup > 0 { kill(-ProcessGroup.activeGroup, SIGKILL) }
                signal(sig, SIG_DFL)
                raise(sig)
            })
            if let old, unsafeBitCast(old, to: Int.self) == 1 { signal(sig, old) }  // SIG_IGN
            previousHandlers[sig] = old
        }
        return body()
    }

    private static func restoreForwarding() {
        for (sig, old) in previousHandlers { signal(sig, old) }
        previousHandlers = [:]
    }
}

/// Collects what a child writes to its stdout and stderr pipes.
private struct PipeReader {
    var fds: [Int32]
    var data: [Data]
    var open: [Bool]

    init(fds: [Int32]) {
        self.fds = fds
        data = fds.map { _ in Data() }
        open = fds.map { _ in true }
    }

    /// Waits up to `milliseconds` for output and reads what is there.
    mutating func poll(milliseconds: Int32) {
        var polled = fds.indices.filter { open[$0] }.map { pollfd(fd: fds[$0], events: Int16(POLLIN), revents: 0) }
        guard !polled.isEmpty else { usleep(UInt32(milliseconds) * 1000); return }
        guard systemPoll(&polled, nfds_t(polled.count), milliseconds) > 0 else { return }
        for p in polled where p.revents != 0 {
            let i = fds.firstIndex(of: p.fd)!
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            let n = buffer.withUnsafeMutableBytes { read(p.fd, $0.baseAddress!, $0.count) }
            if n > 0 { data[i].append(contentsOf: buffer[0 ..< n]) } else if n == 0 || errno != EINTR { open[i] = false }
        }
    }

    /// Reads what is left after the group was killed (bounded, in case a process escaped
    /// the group and still holds a pipe).
    mutating func drain() {
        let end = Date().addingTimeInterval(1)
        while open.contains(true) && Date() < end { poll(milliseconds: 20) }
    }
}

/// poll(2), under a name PipeReader's own poll does not hide.
private func systemPoll(_ fds: UnsafeMutablePointer<pollfd>, _ count: nfds_t, _ milliseconds: Int32) -> Int32 {
    poll(fds, count, milliseconds)
}
