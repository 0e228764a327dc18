//! Real KVM is here: open /dev/kvm, create a VM, run a few instructions in
//! 32-bit protected mode (flat segments, no paging) and see their port I/O
//! and HLT exits.

use kvm_ioctls::VcpuExit;

#[test]
fn runs_protected_mode_code_in_a_vm() {
    let kvm = embervm_core::kvm::open_kvm().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("create VM");

    // mov dx, 0x3f8; add al, bl; add al, '0'; out dx, al; mov al, '\n';
    // out dx, al; hlt
    let code: &[u8] = &[
        0x66, 0xba, 0xf8, 0x03, 0x00, 0xd8, 0x04, b'0', 0xee, 0xb0, b'\n', 0xee, 0xf4,
    ];
    let mem_size = 0x4000usize;
    let guest_addr = 0x1000u64;
    // SAFETY: an anonymous private mapping with no address hint; the result
    // is checked before use and unmapped at the end of the test.
    let host = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mem_size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(host, libc::MAP_FAILED);
    // SAFETY: `host` maps `mem_size` writable bytes and `code` is shorter.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), host.cast::<u8>(), code.len()) };
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: guest_addr,
        memory_size: mem_size as u64,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: the region maps memory that stays valid until after the VM is
    // dropped at the end of this function.
    unsafe {
        vm.set_user_memory_region(region)
            .expect("set memory region")
    };

    let mut vcpu = vm.create_vcpu(0).expect("create vCPU");
    // Give the vCPU the CPUID KVM supports, as every VMM does.
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .expect("supported CPUID");
    vcpu.set_cpuid2(&cpuid).expect("set CPUID");
    let mut sregs = vcpu.get_sregs().expect("get sregs");
    let flat = |selector: u16, type_: u8| kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = flat(0x8, 0xb); // execute/read, accessed
    let data = flat(0x10, 0x3); // read/write, accessed
    sregs.ds = data;
    sregs.es = data;
    sregs.ss = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.cr0 |= 1; // PE
    vcpu.set_sregs(&sregs).expect("set sregs");
    let mut regs = vcpu.get_regs().expect("get regs");
    regs.rip = guest_addr;
    regs.rax = 2;
    regs.rbx = 3;
    regs.rflags = 2;
    vcpu.set_regs(&regs).expect("set regs");

    let mut out = Vec::new();
    let mut halted = false;
    for _ in 0..16 {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(port, data) => {
                assert_eq!(port, 0x3f8);
                out.extend_from_slice(data);
            }
            VcpuExit::Hlt => {
                halted = true;
                break;
            }
            other => panic!("unexpected exit {other:?}"),
        }
    }
    assert!(halted, "the guest never reached hlt");
    assert_eq!(out, b"5\n", "2 + 3 written as a digit and a newline");
    drop(vcpu);
    drop(vm);
    // SAFETY: the VM that referenced the mapping is gone.
    unsafe { libc::munmap(host, mem_size) };
}
