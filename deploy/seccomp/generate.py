"""Source of truth for the sandbox's seccomp profile; writes airlock.json.

The profile is an allowlist: a syscall is allowed only if a group below names
it, everything else fails with EPERM, so a syscall added by a newer kernel is
denied until someone decides otherwise here. DENIED classifies every other
x86_64 syscall (up to Linux 6.17's file_setattr, 469) with the reason it is
refused, and CONDITIONAL holds the few syscalls allowed only for some
argument values. The executor hands the generated JSON to Docker for every
sandbox (airlock/executor/_options.py); deploy/seccomp/README.md explains the design.

    python deploy/seccomp/generate.py          # rewrite airlock.json
    python deploy/seccomp/generate.py --check  # exit 1 if airlock.json is stale
"""

# ruff: noqa: INP001 - a standalone script run by path, not part of a package

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "airlock.json"

EPERM = 1
ENOSYS = 38

# x86_64 is the native ABI. x86 (i386) and x32 are listed so that a syscall
# made through those ABIs is judged by the same names instead of depending on
# the runtime's bad-architecture action.
ARCHITECTURES = ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32")

# -- allowed unconditionally, by purpose ----------------------------------------

ALLOWED: dict[str, tuple[str, ...]] = {
    # read/write and friends on descriptors the process already holds.
    "file descriptors: read, write, seek, duplicate, sync": (
        "close",
        "close_range",
        "copy_file_range",
        "dup",
        "dup2",
        "dup3",
        "fadvise64",
        "fallocate",
        "fcntl",
        "fdatasync",
        "flock",
        "fsync",
        "ftruncate",
        "ioctl",
        "lseek",
        "pipe",
        "pipe2",
        "pread64",
        "preadv",
        "preadv2",
        "pwrite64",
        "pwritev",
        "pwritev2",
        "read",
        "readahead",
        "readv",
        "sendfile",
        "splice",
        "sync_file_range",
        "syncfs",
        "tee",
        "truncate",
        "vmsplice",
        "write",
        "writev",
    ),
    # Path-based calls; the mount table (read-only root, two tmpfs) decides
    # what they can reach. mknod without CAP_MKNOD only makes FIFOs/sockets.
    "paths: open, create, rename, link, remove, change directory": (
        "access",
        "chdir",
        "creat",
        "faccessat",
        "faccessat2",
        "fchdir",
        "getcwd",
        "link",
        "linkat",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "open",
        "openat",
        "openat2",
        "readlink",
        "readlinkat",
        "rename",
        "renameat",
        "renameat2",
        "rmdir",
        "symlink",
        "symlinkat",
        "umask",
        "unlink",
        "unlinkat",
    ),
    # stat, directory listing, modes, owners (only to ids the process already
    # has, without CAP_CHOWN), times and extended attributes (cp -a, ls -l).
    "file metadata: stat, list directories, modes, owners, times, xattrs": (
        "chmod",
        "chown",
        "fchmod",
        "fchmodat",
        "fchmodat2",
        "fchown",
        "fchownat",
        "fgetxattr",
        "file_getattr",
        "file_setattr",
        "flistxattr",
        "fremovexattr",
        "fsetxattr",
        "fstat",
        "fstatfs",
        "futimesat",
        "getdents",
        "getdents64",
        "getxattr",
        "getxattrat",
        "lchown",
        "lgetxattr",
        "listxattr",
        "listxattrat",
        "llistxattr",
        "lremovexattr",
        "lsetxattr",
        "lstat",
        "newfstatat",
        "removexattr",
        "removexattrat",
        "setxattr",
        "setxattrat",
        "stat",
        "statfs",
        "statx",
        "utime",
        "utimensat",
        "utimes",
    ),
    # The process's own address space; the cgroup memory limit bounds it.
    "memory: map, protect, advise, lock, seal the own address space": (
        "brk",
        "madvise",
        "map_shadow_stack",
        "membarrier",
        "memfd_create",
        "mincore",
        "mlock",
        "mlock2",
        "mlockall",
        "mmap",
        "mprotect",
        "mremap",
        "mseal",
        "msync",
        "munlock",
        "munlockall",
        "munmap",
    ),
    # clone itself is conditional (no namespace flags) and clone3 answers
    # ENOSYS; see CONDITIONAL.
    "processes: fork, exec, exit, wait, process groups and sessions": (
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "fork",
        "getpgid",
        "getpgrp",
        "getpid",
        "getppid",
        "getsid",
        "gettid",
        "pidfd_open",
        "pidfd_send_signal",
        "setpgid",
        "setsid",
        "vfork",
        "wait4",
        "waitid",
    ),
    # Thread start-up (glibc, the Go runtime), prctl for names and
    # PR_SET_NO_NEW_PRIVS, and the restrict-only self-sandboxing APIs
    # (seccomp, Landlock) that some tools apply to themselves.
    "this process's own set-up: TLS, robust futexes, rseq, prctl, self-sandboxing": (
        "arch_prctl",
        "getcpu",
        "getrandom",
        "landlock_add_rule",
        "landlock_create_ruleset",
        "landlock_restrict_self",
        "prctl",
        "rseq",
        "seccomp",
        "set_robust_list",
        "set_tid_address",
        "sysinfo",
        "uname",
    ),
    # Without capabilities these can only re-assert ids the process already
    # has, or drop capabilities; programs that drop privileges defensively
    # abort if the call itself is refused.
    "credentials: read ids, re-assert or drop them": (
        "capget",
        "capset",
        "getegid",
        "geteuid",
        "getgid",
        "getgroups",
        "getresgid",
        "getresuid",
        "getuid",
        "setfsgid",
        "setfsuid",
        "setgid",
        "setgroups",
        "setregid",
        "setresgid",
        "setresuid",
        "setreuid",
        "setuid",
    ),
    # Without CAP_SYS_NICE/CAP_SYS_RESOURCE a process can only lower its own
    # priority and limits; the cgroup still caps CPU.
    "resource limits and scheduling of the own processes": (
        "getpriority",
        "getrlimit",
        "getrusage",
        "ioprio_get",
        "ioprio_set",
        "prlimit64",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_getaffinity",
        "sched_getattr",
        "sched_getparam",
        "sched_getscheduler",
        "sched_rr_get_interval",
        "sched_setaffinity",
        "sched_setattr",
        "sched_setparam",
        "sched_setscheduler",
        "sched_yield",
        "setpriority",
        "setrlimit",
        "times",
    ),
    # kill and friends reach only the container's own pid namespace.
    "signals": (
        "alarm",
        "kill",
        "pause",
        "restart_syscall",
        "rt_sigaction",
        "rt_sigpending",
        "rt_sigprocmask",
        "rt_sigqueueinfo",
        "rt_sigreturn",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "rt_tgsigqueueinfo",
        "sigaltstack",
        "signalfd",
        "signalfd4",
        "tgkill",
        "tkill",
    ),
    # Reading clocks and arming timers; setting the clock is denied.
    "time: read clocks, sleep, timers": (
        "clock_getres",
        "clock_gettime",
        "clock_nanosleep",
        "getitimer",
        "gettimeofday",
        "nanosleep",
        "setitimer",
        "time",
        "timer_create",
        "timer_delete",
        "timer_getoverrun",
        "timer_gettime",
        "timer_settime",
        "timerfd_create",
        "timerfd_gettime",
        "timerfd_settime",
    ),
    "waiting: poll, select, epoll, eventfd, futex, inotify": (
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_pwait",
        "epoll_pwait2",
        "epoll_wait",
        "eventfd",
        "eventfd2",
        "futex",
        "inotify_add_watch",
        "inotify_init",
        "inotify_init1",
        "inotify_rm_watch",
        "poll",
        "ppoll",
        "pselect6",
        "select",
    ),
    # Everything on an existing socket. Creating one (socket, socketpair) is
    # conditional on the address family; the network itself is "none".
    "sockets: use a socket once made": (
        "accept",
        "accept4",
        "bind",
        "connect",
        "getpeername",
        "getsockname",
        "getsockopt",
        "listen",
        "recvfrom",
        "recvmmsg",
        "recvmsg",
        "sendmmsg",
        "sendmsg",
        "sendto",
        "setsockopt",
        "shutdown",
    ),
    # Every container has its own IPC namespace, so these reach only objects
    # of the same sandbox.
    "System V and POSIX IPC (private IPC namespace)": (
        "mq_getsetattr",
        "mq_notify",
        "mq_open",
        "mq_timedreceive",
        "mq_timedsend",
        "mq_unlink",
        "msgctl",
        "msgget",
        "msgrcv",
        "msgsnd",
        "semctl",
        "semget",
        "semop",
        "semtimedop",
        "shmat",
        "shmctl",
        "shmdt",
        "shmget",
    ),
    # The i386 ABI's own names for operations allowed above (64-bit offsets,
    # 32-bit uids, time64, TLS descriptors), so a 32-bit program gets the same
    # set and no more. Their multiplexers socketcall and ipc stay denied.
    "i386 ABI names of the calls above": (
        "_llseek",
        "_newselect",
        "chown32",
        "clock_getres_time64",
        "clock_gettime64",
        "clock_nanosleep_time64",
        "fadvise64_64",
        "fchown32",
        "fcntl64",
        "fstat64",
        "fstatat64",
        "fstatfs64",
        "ftruncate64",
        "futex_time64",
        "get_thread_area",
        "getegid32",
        "geteuid32",
        "getgid32",
        "getgroups32",
        "getresgid32",
        "getresuid32",
        "getuid32",
        "lchown32",
        "lstat64",
        "mmap2",
        "mq_timedreceive_time64",
        "mq_timedsend_time64",
        "ppoll_time64",
        "pselect6_time64",
        "recvmmsg_time64",
        "rt_sigtimedwait_time64",
        "sched_rr_get_interval_time64",
        "semtimedop_time64",
        "sendfile64",
        "set_thread_area",
        "setfsgid32",
        "setfsuid32",
        "setgid32",
        "setgroups32",
        "setregid32",
        "setresgid32",
        "setresuid32",
        "setreuid32",
        "setuid32",
        "sigaction",
        "sigpending",
        "sigprocmask",
        "sigreturn",
        "sigsuspend",
        "stat64",
        "statfs64",
        "timer_gettime64",
        "timer_settime64",
        "timerfd_gettime64",
        "timerfd_settime64",
        "truncate64",
        "ugetrlimit",
        "utimensat_time64",
        "waitpid",
    ),
}

# -- allowed only for some argument values ---------------------------------------

#: clone flags that create a namespace: CLONE_NEWNS | CLONE_NEWCGROUP |
#: CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET.
CLONE_NAMESPACE_FLAGS = 0x7E020000
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
AF_NETLINK = 16
NETLINK_ROUTE = 0
PER_LINUX = 0x0
PERSONALITY_QUERY = 0xFFFFFFFF


@dataclass(frozen=True)
class Arg:
    """One comparison on a syscall argument (runc ANDs those of one rule)."""

    index: int
    value: int
    op: str = "SCMP_CMP_EQ"
    value_two: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "value": self.value, "valueTwo": self.value_two}


@dataclass(frozen=True)
class Rule:
    """A syscall allowed when every arg comparison holds, or answered with an errno."""

    name: str
    why: str
    args: tuple[Arg, ...] = ()
    errno: int | None = None

    def to_json(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"comment": self.why, "names": [self.name]}
        if self.errno is None:
            rule["action"] = "SCMP_ACT_ALLOW"
        else:
            rule["action"] = "SCMP_ACT_ERRNO"
            rule["errnoRet"] = self.errno
        if self.args:
            rule["args"] = [a.to_json() for a in self.args]
        return rule


CONDITIONAL: tuple[Rule, ...] = (
    Rule(
        "clone",
        "clone without any namespace flag (threads, fork, posix_spawn)",
        (Arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0),),
    ),
    # clone3 takes its flags in a struct that seccomp cannot read, so it
    # cannot be filtered like clone; ENOSYS makes glibc fall back to clone.
    Rule("clone3", "ENOSYS: flags live in memory seccomp cannot inspect; libc falls back to clone", errno=ENOSYS),
    Rule("socket", "socket: AF_UNIX", (Arg(0, AF_UNIX),)),
    Rule("socket", "socket: AF_INET", (Arg(0, AF_INET),)),
    Rule("socket", "socket: AF_INET6", (Arg(0, AF_INET6),)),
    # glibc's getaddrinfo and getifaddrs ask the kernel for addresses over
    # NETLINK_ROUTE; the other netlink protocols (netfilter, audit, xfrm,
    # uevents, ...) are kernel surface no tool here needs.
    Rule("socket", "socket: AF_NETLINK, NETLINK_ROUTE only", (Arg(0, AF_NETLINK), Arg(2, NETLINK_ROUTE))),
    Rule("socketpair", "socketpair: AF_UNIX", (Arg(0, AF_UNIX),)),
    Rule("personality", "personality: query the current persona", (Arg(0, PERSONALITY_QUERY),)),
    Rule("personality", "personality: PER_LINUX, the default persona", (Arg(0, PER_LINUX),)),
)

# -- denied (the default action), with the reason -----------------------------------

_NS = "creates or enters namespaces; the sandbox's namespaces are fixed by the runtime"
_MNT = "changes the mount tree; the sandbox's mounts are fixed by the runtime"
_OTHER = "reads or writes another process"
_AIO = "Linux native AIO (libaio); nothing in the sandbox uses it (glibc's POSIX aio uses threads)"
_FUTEX2 = "futex2 API; glibc uses futex, nothing in the sandbox needs the new calls"
_NUMA = "NUMA placement (and moving other processes' pages); the cgroup limits are what bound a sandbox"
_CLOCK = "sets the host clock"
_MODULE = "loads or unloads kernel modules"
_OLD = "obsolete (libc5 era); nothing uses it"
_GONE = "never implemented, or removed, on x86_64"
_PKEYS = "memory protection keys; nothing here uses them (JITs that do fall back); Docker 20.10's default refuses them"
_LSM = "LSM attribute API; the sandbox has no use for its security labels"

DENIED: dict[str, str] = {
    # Other processes.
    "ptrace": "reads and rewrites other processes' memory and registers (Docker's default allows it since 4.8)",
    "process_vm_readv": f"{_OTHER}'s memory, as ptrace does (some Docker versions' default allows it)",
    "process_vm_writev": f"{_OTHER}'s memory, as ptrace does (some Docker versions' default allows it)",
    "kcmp": "compares kernel objects of two processes (ptrace-gated; checkpoint/restore only)",
    "pidfd_getfd": "steals a file descriptor from another process (ptrace-gated)",
    "process_madvise": "gives memory advice for another process's address space",
    "process_mrelease": "reaps the memory of another, dying process",
    "get_robust_list": "reads another thread's robust-futex list head (an address leak); glibc only sets its own",
    # Namespaces and mounts.
    "unshare": _NS,
    "setns": _NS,
    "mount": _MNT,
    "umount2": _MNT,
    "pivot_root": _MNT,
    "chroot": "changes the root directory; a classic first step of container escapes",
    "move_mount": f"new mount API: {_MNT}",
    "open_tree": f"new mount API: {_MNT}",
    "open_tree_attr": f"new mount API: {_MNT}",
    "fsopen": f"new mount API: {_MNT}",
    "fsconfig": f"new mount API: {_MNT}",
    "fsmount": f"new mount API: {_MNT}",
    "fspick": f"new mount API: {_MNT}",
    "mount_setattr": f"new mount API: {_MNT}",
    "statmount": "mount introspection API; the sandbox has no need to enumerate mounts",
    "listmount": "mount introspection API; the sandbox has no need to enumerate mounts",
    # Kernel surface with a long exploit history.
    "bpf": "loads eBPF programs and maps: large kernel attack surface",
    "userfaultfd": "lets user space stall kernel page faults, a staple of kernel exploits",
    "perf_event_open": "performance counters: kernel attack surface and side channels",
    "io_uring_setup": "io_uring: large, fast-moving kernel attack surface that bypasses per-syscall filtering",
    "io_uring_enter": "io_uring: large, fast-moving kernel attack surface that bypasses per-syscall filtering",
    "io_uring_register": "io_uring: large, fast-moving kernel attack surface that bypasses per-syscall filtering",
    "keyctl": "kernel keyring, not namespaced: keys of other containers and the host",
    "add_key": "kernel keyring, not namespaced: keys of other containers and the host",
    "request_key": "kernel keyring, not namespaced: keys of other containers and the host",
    "fanotify_init": "filesystem-wide event monitoring",
    "fanotify_mark": "filesystem-wide event monitoring",
    "name_to_handle_at": "makes file handles, the input of open_by_handle_at; nothing else needs them",
    "open_by_handle_at": "opens files by handle, bypassing paths: the 'shocker' container escape",
    "lookup_dcookie": "oprofile's directory-cookie lookup; gone from recent kernels",
    "memfd_secret": "secret memory removed from the kernel's direct map; no tool needs it",
    "cachestat": "page-cache residency of any readable file: a cross-tenant side channel",
    "modify_ldt": "16-bit segment descriptors (Wine, DOSEMU); a source of kernel bugs",
    "uretprobe": "called only by the kernel's uretprobe trampoline (recent kernels exempt it from seccomp anyway)",
    "lsm_get_self_attr": _LSM,
    "lsm_set_self_attr": _LSM,
    "lsm_list_modules": _LSM,
    # The host.
    "reboot": "reboots or halts the machine",
    "kexec_load": "loads a new kernel",
    "kexec_file_load": "loads a new kernel",
    "init_module": _MODULE,
    "finit_module": _MODULE,
    "delete_module": _MODULE,
    "iopl": "raw I/O port access",
    "ioperm": "raw I/O port access",
    "swapon": "host swap configuration",
    "swapoff": "host swap configuration",
    "acct": "host process accounting",
    "quotactl": "filesystem quota administration",
    "quotactl_fd": "filesystem quota administration",
    "syslog": "reads or clears the host's kernel log",
    "vhangup": "hangs up the controlling terminal",
    "sethostname": "the hostname is fixed by the runtime",
    "setdomainname": "the domain name is fixed by the runtime",
    "sync": "flushes every filesystem on the host (a noisy neighbour); glibc's sync() returns void, so callers go on",
    "clock_settime": _CLOCK,
    "settimeofday": _CLOCK,
    "adjtimex": f"{_CLOCK} (read-only use is rare and not needed)",
    "clock_adjtime": f"{_CLOCK} (read-only use is rare and not needed)",
    # NUMA.
    "get_mempolicy": "reads the NUMA policy: harmless but unneeded; Docker's default refuses it without CAP_SYS_NICE",
    "mbind": _NUMA,
    "set_mempolicy": _NUMA,
    "set_mempolicy_home_node": _NUMA,
    "migrate_pages": _NUMA,
    "move_pages": _NUMA,
    # Interfaces nothing in the sandbox uses.
    "io_setup": _AIO,
    "io_destroy": _AIO,
    "io_submit": _AIO,
    "io_cancel": _AIO,
    "io_getevents": _AIO,
    "io_pgetevents": _AIO,
    "futex_waitv": _FUTEX2,
    "futex_wait": _FUTEX2,
    "futex_wake": _FUTEX2,
    "futex_requeue": _FUTEX2,
    "pkey_alloc": _PKEYS,
    "pkey_free": _PKEYS,
    "pkey_mprotect": _PKEYS,
    "remap_file_pages": "deprecated, emulated in the kernel; a source of bugs and no users",
    # Obsolete.
    "uselib": _OLD,
    "ustat": _OLD,
    "sysfs": _OLD,
    "_sysctl": _GONE,
    "nfsservctl": _GONE,
    "create_module": _GONE,
    "get_kernel_syms": _GONE,
    "query_module": _GONE,
    "getpmsg": _GONE,
    "putpmsg": _GONE,
    "afs_syscall": _GONE,
    "tuxcall": _GONE,
    "security": _GONE,
    "vserver": _GONE,
    "epoll_ctl_old": _GONE,
    "epoll_wait_old": _GONE,
    # i386 only.
    "socketcall": "i386 socket multiplexer: its arguments are in memory, so the socket family filter cannot see them",
    "ipc": "i386 System V IPC multiplexer; the direct i386 calls are allowed instead",
    "vm86": "i386 virtual-8086 mode",
    "vm86old": "i386 virtual-8086 mode",
    "stime": f"i386: {_CLOCK}",
    "clock_settime64": f"i386: {_CLOCK}",
    "clock_adjtime64": f"i386: {_CLOCK}",
    "io_pgetevents_time64": f"i386: {_AIO}",
}


def allowed_names() -> set[str]:
    return {name for names in ALLOWED.values() for name in names}


def validate() -> None:
    """Each syscall is in exactly one place: a group, a conditional rule, or DENIED."""
    seen: dict[str, str] = {}
    for group, names in ALLOWED.items():
        if list(names) != sorted(names):
            raise ValueError(f"group {group!r} is not sorted")
        for name in names:
            if name in seen:
                raise ValueError(f"{name} is listed in {seen[name]!r} and in {group!r}")
            seen[name] = group
    for rule in CONDITIONAL:
        if rule.name in seen and seen[rule.name] != "conditional":
            raise ValueError(f"{rule.name} is conditional and also in {seen[rule.name]!r}")
        seen[rule.name] = "conditional"
    for name in DENIED:
        if name in seen:
            raise ValueError(f"{name} is denied and also in {seen[name]!r}")


def profile() -> dict[str, Any]:
    validate()
    rules: list[dict[str, Any]] = [
        {"action": "SCMP_ACT_ALLOW", "comment": group, "names": sorted(names)} for group, names in ALLOWED.items()
    ]
    rules += [rule.to_json() for rule in CONDITIONAL]
    return {
        "architectures": list(ARCHITECTURES),
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "syscalls": rules,
    }


def render() -> str:
    return json.dumps(profile(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if airlock.json differs from the generated text")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            sys.stderr.write(f"{OUTPUT} is stale; run: python deploy/seccomp/generate.py\n")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
