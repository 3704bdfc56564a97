//! The cgroup v2 device controller: an eBPF program (`BPF_PROG_TYPE_CGROUP_DEVICE`) attached to a
//! cgroup decides every device open and `mknod` of its tasks. Guarantees: the program built here
//! allows exactly the listed character devices with at most the listed access (`r`, `w`, `m`)
//! and denies every other device; it is attached with `BPF_F_ALLOW_MULTI`, so a device program
//! the host already has above the cgroup still applies too (a device must pass both).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One allowed device: `(major, minor, access)`, access a subset of `rwm`.
pub type Rule = (u64, u64, String);

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
/// `BPF_DEVCG_DEV_CHAR`.
const DEV_CHAR: i32 = 2;

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// `BPF_DEVCG_ACC_*` bits of `rwm`.
fn access_bits(perms: &str) -> i32 {
    perms.chars().fold(0, |a, c| match c {
        'm' => a | 1,
        'r' => a | 2,
        'w' => a | 4,
        _ => a,
    })
}

/// The program: for `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
/// (`access_type` = access << 16 | type), return 1 for a listed character device whose requested
/// access is within the rule's, else 0.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(0x61, 2, 1, 0, 0),      // r2 = ctx->access_type
        insn(0xbf, 3, 2, 0, 0),      // r3 = r2
        insn(0x57, 3, 0, 0, 0xffff), // r3 &= 0xffff (type)
        insn(0xbf, 4, 2, 0, 0),      // r4 = r2
        insn(0x77, 4, 0, 0, 16),     // r4 >>= 16 (access)
        insn(0x61, 5, 1, 4, 0),      // r5 = ctx->major
        insn(0x61, 6, 1, 8, 0),      // r6 = ctx->minor
    ];
    for (major, minor, perms) in rules {
        // Majors and minors are 32-bit in the context; larger ones cannot match.
        let (Ok(major), Ok(minor)) = (i32::try_from(*major), i32::try_from(*minor)) else {
            continue;
        };
        let denied = !access_bits(perms) & 7;
        p.extend([
            insn(0x55, 3, 0, 7, DEV_CHAR), // if type != char: next rule
            insn(0x55, 5, 0, 6, major),    // if major != M: next rule
            insn(0x55, 6, 0, 5, minor),    // if minor != m: next rule
            insn(0xbf, 7, 4, 0, 0),        // r7 = access
            insn(0x57, 7, 0, 0, denied),   // r7 &= access not granted
            insn(0x55, 7, 0, 2, 0),        // if any: next rule
            insn(0xb7, 0, 0, 0, 1),        // r0 = 1 (allow)
            insn(0x95, 0, 0, 0, 0),        // exit
        ]);
    }
    p.extend([insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)]); // deny
    p
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised `union bpf_attr` of 128 bytes, filled for `cmd`;
    // every pointer in it refers to memory that lives across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Load the program for `rules`.
pub fn load(rules: &[Rule]) -> std::io::Result<OwnedFd> {
    let prog = program(rules);
    let license = c"Apache-2.0";
    let mut attr = [0u64; 16];
    // prog_type (u32), insn_cnt (u32) | insns (u64) | license (u64); the rest zero (no log).
    attr[0] = u64::from(BPF_PROG_TYPE_CGROUP_DEVICE) | ((prog.len() as u64) << 32);
    attr[1] = prog.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // prog_ifindex (u32, 0) | expected_attach_type (u32) at byte 64.
    attr[8] = u64::from(BPF_CGROUP_DEVICE) << 32;
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attach `prog` to the cgroup v2 folder `cgroup` (`BPF_F_ALLOW_MULTI`). The attachment lasts
/// as long as the cgroup.
pub fn attach(prog: &OwnedFd, cgroup: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(cgroup)?;
    let mut attr = [0u64; 16];
    // target_fd (u32), attach_bpf_fd (u32) | attach_type (u32), attach_flags (u32).
    attr[0] = u64::from(dir.as_raw_fd() as u32) | (u64::from(prog.as_raw_fd() as u32) << 32);
    attr[1] = u64::from(BPF_CGROUP_DEVICE) | (u64::from(BPF_F_ALLOW_MULTI) << 32);
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_block_jumps_to_the_next() {
        let p = program(&[(1, 3, "rw".into()), (195, 0, "rwm".into())]);
        assert_eq!(p.len(), 7 + 8 + 8 + 2);
        // The first rule's "next" jumps land on the second rule's first instruction.
        for (i, off) in [(7usize, 7i16), (8, 6), (9, 5), (12, 2)] {
            assert_eq!(p[i].off, off);
            assert_eq!(i + 1 + off as usize, 15);
        }
        assert_eq!(p[11].imm, 1, "rw leaves only mknod denied");
        assert_eq!(p[19].imm, 0, "rwm denies nothing");
    }

    /// Runs where there is a cgroup v2 hierarchy (`/sys/fs/cgroup`, or the hybrid
    /// `/sys/fs/cgroup/unified`) and root, as on the development machines and in CI; without
    /// either there is nothing to attach to, and it returns at once.
    #[test]
    fn the_program_allows_only_its_devices() {
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| {
                nix::sys::statfs::statfs(*p)
                    .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            });
        // SAFETY: geteuid has no preconditions.
        let (Some(base), true) = (base, unsafe { libc::geteuid() } == 0) else {
            return;
        };
        let cg = base.join(format!("sealrun-devtest-{}", std::process::id()));
        std::fs::create_dir(&cg).unwrap();
        let prog = load(&[(1, 3, "rw".into())]).unwrap();
        attach(&prog, &cg).unwrap();
        // SAFETY: fork in a test; the child only joins the cgroup, opens and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let joined = std::fs::write(cg.join("cgroup.procs"), "0").is_ok();
            let null = std::fs::File::open("/dev/null").is_ok();
            let zero = std::fs::File::open("/dev/zero")
                .map(drop)
                .map_err(|e| e.raw_os_error());
            let ok = joined && null && zero == Err(Some(libc::EPERM));
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        std::fs::remove_dir(&cg).unwrap();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "in the cgroup: /dev/null opens, /dev/zero is refused (EPERM)"
        );
    }
}
