//! The public VM: [`VmConfig`] in, a booted guest out.
//!
//! [`Vm::new`] does every check and every piece of setup: it validates the
//! configuration and plans the boot (kernel, initrd, command line against the
//! guest's RAM) before touching KVM, then opens KVM, checks the vCPU limit,
//! maps guest memory, creates the VM (irqchip, PIT), loads the kernel and
//! writes the boot structures (page tables, MP table, boot params), wires
//! the UART (IRQ 4 through an irqfd) and the i8042 onto the port bus, puts
//! the virtio-vsock device (if [`VmConfig::vsock`] asks for it; IRQ 5,
//! ioeventfds on QueueNotify, declared on the command line) on the MMIO bus,
//! and creates and configures every vCPU. No vCPU has run when it returns,
//! so all bad input fails there.
//!
//! [`Vm::run`] starts one thread per vCPU and blocks until the guest resets
//! or shuts down, a vCPU fails, or a [`VmHandle`] kills it; then it stops and
//! joins every thread and drops the VM, leaving nothing behind. A
//! [`VmHandle`] (cheap to clone, usable from any thread, before or during
//! `run`) pauses, resumes and kills; a [`VsockHandle`] ([`Vm::vsock`])
//! connects to guest ports and listens for the guest's connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::boot::{self, BootPlan};
use crate::arch::x86_64::layout::{
    I8042_PORT_BASE, I8042_PORT_LEN, SERIAL_IRQ, SERIAL_PORT_BASE, SERIAL_PORT_LEN,
    VIRTIO_MMIO_WINDOW, VIRTIO_VSOCK_IRQ, VIRTIO_VSOCK_MMIO_BASE,
};
use crate::arch::x86_64::regs::EntryPoint;
use crate::arch::x86_64::{mptable, paging};
use crate::devices::bus::PioBus;
use crate::devices::console::{ConsoleConfig, ConsoleOut, PanicRecord};
use crate::devices::i8042::I8042State;
use crate::devices::i8042::I8042;
use crate::devices::serial::{Serial, SerialState};
use crate::devices::virtio::mmio::{self, MmioTransport, MmioTransportState};
use crate::devices::virtio::mmio_bus::MmioBus;
use crate::devices::virtio::vsock::{
    VsockConfig, VsockDevice, VsockError, VsockHandle, VsockListener,
};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::error::VmError;
use crate::exit::ExitReason;
use crate::memory::{self, GuestMemory};
use crate::snapshot::error::SnapshotError;
use crate::snapshot::format::HostFacts;
use crate::snapshot::{save, SnapshotInfo, SnapshotState};
use crate::vstate::control::{install_kick_handler, Control};
use crate::vstate::vcpu::{Vcpu, VcpuContext};
use crate::vstate::vcpu_state::SaveInfo;
use crate::vstate::vm::KvmVm;
use crate::vstate::{kvm_err, SetupError};

/// Most vCPUs a guest gets: the guest kernel's NR_CPUS and the MP table's room.
pub const MAX_VCPUS: u32 = mptable::MAX_CPUS;
/// A command line that suits the embervm guest kernel.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet";
/// Default guest memory.
pub const DEFAULT_MEMORY_MIB: u32 = 256;

/// What to boot and how big.
#[derive(Debug)]
pub struct VmConfig {
    /// `vmlinux` (ELF; PVH entry if present) or `bzImage`.
    pub kernel: PathBuf,
    /// Optional initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Where the serial console goes.
    pub console: ConsoleConfig,
    /// The virtio-vsock device (off by default); when set, it is declared
    /// to the guest on the command line and [`Vm::vsock`] reaches it.
    pub vsock: Option<VsockConfig>,
}

impl VmConfig {
    /// A config for `kernel` with the defaults: no initrd,
    /// [`DEFAULT_CMDLINE`], [`DEFAULT_MEMORY_MIB`], 1 vCPU, console off.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_string(),
            memory_mib: DEFAULT_MEMORY_MIB,
            vcpus: 1,
            console: ConsoleConfig::off(),
            vsock: None,
        }
    }
}

/// Check the vCPU count against the guest-side limit (and KVM's, if known).
pub fn validate_vcpus(value: u32, kvm_max: Option<u32>) -> Result<(), VmError> {
    let max = MAX_VCPUS.min(kvm_max.unwrap_or(u32::MAX));
    if value == 0 || value > max {
        return Err(VmError::VcpuCount {
            value,
            max,
            kvm_max,
            guest_max: MAX_VCPUS,
        });
    }
    Ok(())
}

/// Controls a VM from any thread.
#[derive(Clone)]
pub struct VmHandle {
    control: Arc<Control>,
    shared: Weak<VmShared>,
}

impl VmHandle {
    /// Stop the VM; [`Vm::run`] returns [`ExitReason::Killed`] unless the
    /// guest already ended it.
    pub fn kill(&self) {
        self.control.stop(Ok(ExitReason::Killed));
    }

    /// Take every vCPU out of the guest and hold it; returns once all are
    /// parked. Returns false if the VM is stopping or stopped.
    pub fn pause(&self) -> bool {
        self.control.pause()
    }

    /// Let paused vCPUs continue.
    pub fn resume(&self) {
        self.control.resume()
    }

    /// When vCPU 0 first entered `KVM_RUN`.
    pub fn first_kvm_run(&self) -> Option<Instant> {
        self.control.first_run()
    }

    /// Write a snapshot of the paused VM into directory `dir` (created if
    /// missing): `dir/state` and the sparse `dir/memory`. The VM stays
    /// paused; [`VmHandle::resume`] continues it, [`VmHandle::kill`] ends it.
    pub fn snapshot(&self, dir: &Path) -> Result<SnapshotInfo, SnapshotError> {
        let shared = self.shared.upgrade().ok_or(SnapshotError::Stopped)?;
        if self.control.stopping() {
            return Err(SnapshotError::Stopped);
        }
        if !self.control.is_paused() {
            return Err(SnapshotError::NotPaused);
        }
        save::snapshot(&shared, dir, || {
            let states = self.control.save_vcpus().ok_or(SnapshotError::Stopped)?;
            states
                .into_iter()
                .map(|r| r.map_err(SnapshotError::from))
                .collect()
        })
    }
}

/// How a VM restored from a snapshot is wired to the host (everything else
/// comes from the snapshot).
#[derive(Debug, Default)]
pub struct RestoreConfig {
    /// Where the serial console goes.
    pub console: ConsoleConfig,
    /// Where the vsock device's hybrid Unix socket listens, if at all (the
    /// guest CID comes from the snapshot).
    pub vsock_uds: Option<PathBuf>,
}

/// The devices of a restored VM.
pub(crate) struct RestoredDevices {
    mmio: MmioBus,
    vsock: Option<(VsockHandle, Arc<Mutex<MmioTransport>>)>,
    legacy: LegacyDevices,
    panic: PanicRecord,
}

/// Everything [`crate::snapshot::restore`] builds, for [`Vm::restore`].
pub(crate) struct RestoredParts {
    pub(crate) kvm: Kvm,
    pub(crate) vm: KvmVm,
    pub(crate) memory: GuestMemory,
    pub(crate) memory_mib: u32,
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) devices: RestoredDevices,
    pub(crate) save: SaveInfo,
    pub(crate) facts: HostFacts,
    pub(crate) timings: SetupTimings,
}

/// How long each phase of [`Vm::new`] took (for benchmarks and tuning).
#[derive(Debug, Clone, Default)]
pub struct SetupTimings {
    /// Phase name and duration, in order.
    pub phases: Vec<(&'static str, Duration)>,
}

impl SetupTimings {
    pub(crate) fn mark(&mut self, name: &'static str, since: &mut Instant) {
        let now = Instant::now();
        self.phases.push((name, now - *since));
        *since = now;
    }

    /// Sum of all phases.
    pub fn total(&self) -> Duration {
        self.phases.iter().map(|p| p.1).sum()
    }
}

/// Tells [`Control`] a vCPU thread is gone when dropped.
struct ThreadExit<'a>(&'a Control);

impl Drop for ThreadExit<'_> {
    fn drop(&mut self) {
        self.0.thread_exited();
    }
}

/// The parts of a VM a snapshot reads, shared by the [`Vm`] and (weakly)
/// its handles. Field order is drop order: devices before the VM fd, the
/// VM fd before the memory it maps.
pub(crate) struct VmShared {
    pub(crate) bus: Arc<PioBus>,
    pub(crate) mmio: Arc<MmioBus>,
    pub(crate) vsock_transport: Option<Arc<Mutex<MmioTransport>>>,
    pub(crate) serial: Arc<Mutex<Serial>>,
    pub(crate) i8042: Arc<Mutex<I8042>>,
    pub(crate) save: SaveInfo,
    pub(crate) facts: HostFacts,
    pub(crate) memory_mib: u32,
    pub(crate) _serial_irq: EventFd,
    pub(crate) vm: KvmVm,
    pub(crate) _kvm: Kvm,
    pub(crate) memory: GuestMemory,
}

/// A VM ready to run.
pub struct Vm {
    // vCPUs before the VM they belong to.
    vcpus: Vec<Vcpu>,
    vsock: Option<VsockHandle>,
    panic: PanicRecord,
    control: Arc<Control>,
    entry: Option<EntryPoint>,
    timings: SetupTimings,
    shared: Arc<VmShared>,
}

impl Vm {
    /// Check `config`, build the VM and configure its vCPUs (none runs yet).
    pub fn new(config: VmConfig) -> Result<Self, VmError> {
        let mut timings = SetupTimings::default();
        let mut t = Instant::now();
        validate_vcpus(config.vcpus, None)?;
        memory::validate_memory_mib(config.memory_mib)?;
        let cmdline = match &config.vsock {
            Some(_) => format!(
                "{} {}",
                config.cmdline,
                mmio::cmdline_entry(VIRTIO_VSOCK_MMIO_BASE, VIRTIO_MMIO_WINDOW, VIRTIO_VSOCK_IRQ)
            ),
            None => config.cmdline.clone(),
        };
        let plan: BootPlan = boot::plan(
            &config.kernel,
            config.initrd.as_deref(),
            &cmdline,
            memory::low_ram_end(config.memory_mib),
        )?;
        timings.mark("validate and plan", &mut t);

        let kvm = crate::kvm::open_kvm()?;
        let kvm_max = u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX);
        validate_vcpus(config.vcpus, Some(kvm_max))?;
        install_kick_handler()?;
        timings.mark("open /dev/kvm", &mut t);

        let mem = memory::create_guest_memory(config.memory_mib)?;
        timings.mark("map guest memory", &mut t);
        let vm = KvmVm::new(&kvm)?;
        vm.register_memory(&mem)?;
        timings.mark("create VM, TSS, register memory", &mut t);
        vm.setup_irqchip()?;
        timings.mark("irqchip, PIT", &mut t);
        memory::advise_hugepages(&mem, plan.kernel.start, plan.kernel.end);
        if let Some((_, addr, size)) = &plan.initrd {
            memory::advise_hugepages(&mem, *addr, addr + size);
        }

        let entry = boot::load(&mem, &plan)?;
        timings.mark("load kernel, initrd, boot params", &mut t);
        paging::write_identity_tables(&mem).map_err(|source| SetupError::Memory {
            what: "page tables",
            source,
        })?;
        mptable::write_mptable(&mem, config.vcpus).map_err(SetupError::from)?;
        timings.mark("page tables, MP table", &mut t);

        let panic = PanicRecord::default();
        let legacy = LegacyDevices::new(&vm, config.console, &panic, None)?;
        let mut mmio_bus = MmioBus::new();
        let (vsock, vsock_transport) = match &config.vsock {
            Some(vc) => {
                let (h, t) = attach_vsock(&vm, &mem, &mut mmio_bus, vc)?;
                (Some(h), Some(t))
            }
            None => (None, None),
        };

        timings.mark("devices", &mut t);
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let (facts, save) = crate::snapshot::host_info(&kvm)?;
        let mut vcpus = Vec::with_capacity(config.vcpus as usize);
        for i in 0..config.vcpus {
            let v = Vcpu::new(i, vm.create_vcpu(i)?);
            v.configure(&supported, config.vcpus, entry)?;
            vcpus.push(v);
        }
        timings.mark("create and configure vCPUs", &mut t);

        Ok(Self {
            vcpus,
            vsock,
            panic,
            control: Arc::new(Control::new()),
            entry: Some(entry),
            timings,
            shared: Arc::new(VmShared {
                bus: Arc::new(legacy.bus),
                mmio: Arc::new(mmio_bus),
                vsock_transport,
                serial: legacy.serial,
                i8042: legacy.i8042,
                save,
                facts,
                memory_mib: config.memory_mib,
                _serial_irq: legacy.serial_irq,
                vm,
                _kvm: kvm,
                memory: mem,
            }),
        })
    }

    /// Build a VM from the snapshot in `dir` (see [`crate::snapshot`]). The
    /// snapshot is checked first (format, version, checksum, this host's
    /// CPUID and KVM capabilities): a bad one is refused with an error that
    /// says why, and nothing runs. No vCPU has run when it returns.
    pub fn restore(dir: &Path, config: RestoreConfig) -> Result<Self, VmError> {
        let p = crate::snapshot::restore::restore(dir, config)?;
        let d = p.devices;
        let (vsock, vsock_transport) = match d.vsock {
            Some((h, t)) => (Some(h), Some(t)),
            None => (None, None),
        };
        Ok(Self {
            vcpus: p.vcpus,
            vsock,
            panic: d.panic,
            control: Arc::new(Control::new()),
            entry: None,
            timings: p.timings,
            shared: Arc::new(VmShared {
                bus: Arc::new(d.legacy.bus),
                mmio: Arc::new(d.mmio),
                vsock_transport,
                serial: d.legacy.serial,
                i8042: d.legacy.i8042,
                save: p.save,
                facts: p.facts,
                memory_mib: p.memory_mib,
                _serial_irq: d.legacy.serial_irq,
                vm: p.vm,
                _kvm: p.kvm,
                memory: p.memory,
            }),
        })
    }

    /// A handle to the vsock device's host side (clone it before
    /// [`Vm::run`] to use it while the VM runs), if the VM has one.
    pub fn vsock(&self) -> Option<VsockHandle> {
        self.vsock.clone()
    }

    /// Connect to guest vsock `port`; returns once the guest accepted.
    pub fn connect(&self, port: u32) -> Result<std::os::unix::net::UnixStream, VsockError> {
        self.vsock
            .as_ref()
            .ok_or(VsockError::NotConfigured)?
            .connect(port)
    }

    /// Accept guest-initiated vsock connections to host `port`.
    pub fn listen(&self, port: u32) -> Result<VsockListener, VsockError> {
        self.vsock
            .as_ref()
            .ok_or(VsockError::NotConfigured)?
            .listen(port)
    }

    /// A handle to pause, resume or kill this VM from another thread.
    pub fn handle(&self) -> VmHandle {
        VmHandle {
            control: self.control.clone(),
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Snapshot a VM that has not run yet (for tools and host-side
    /// benchmarks; a running VM is snapshotted through [`VmHandle`]).
    pub fn snapshot(&mut self, dir: &Path) -> Result<SnapshotInfo, SnapshotError> {
        let info = self.shared.save.clone();
        let vcpus = &mut self.vcpus;
        save::snapshot(&self.shared, dir, || {
            vcpus
                .iter_mut()
                .map(|v| v.capture_state(&info).map_err(SnapshotError::from))
                .collect()
        })
    }

    /// How the boot vCPU enters the kernel (PVH or 64-bit Linux); `None`
    /// for a VM restored from a snapshot.
    pub fn entry_point(&self) -> Option<EntryPoint> {
        self.entry
    }

    /// How long each phase of [`Vm::new`] took.
    pub fn setup_timings(&self) -> &SetupTimings {
        &self.timings
    }

    /// Run the guest until it ends or is killed; then tear everything down.
    pub fn run(mut self) -> Result<ExitReason, VmError> {
        let control = self.control.clone();
        let vcpus = std::mem::take(&mut self.vcpus);
        control.expect_threads(vcpus.len());
        let mut threads = Vec::with_capacity(vcpus.len());
        let mut unstarted = 0;
        for mut vcpu in vcpus {
            let index = vcpu.index();
            let (shared, ctl, panic) = (self.shared.clone(), control.clone(), self.panic.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("ember-vcpu{index}"))
                .spawn(move || {
                    // Counts the thread out even if it unwinds.
                    let _exited = ThreadExit(&ctl);
                    let ctx = VcpuContext {
                        bus: &shared.bus,
                        mmio: &shared.mmio,
                        control: &ctl,
                        panic: &panic,
                        save: &shared.save,
                    };
                    if let Some(outcome) = vcpu.run(&ctx) {
                        ctl.stop(outcome);
                    }
                    drop(vcpu);
                });
            match spawned {
                Ok(h) => {
                    use std::os::unix::thread::JoinHandleExt;
                    control.add_thread(h.as_pthread_t());
                    threads.push(h);
                }
                Err(source) => {
                    unstarted += 1;
                    control.stop(Err(VmError::Thread {
                        vcpu: index,
                        source,
                    }));
                }
            }
        }
        for _ in 0..unstarted {
            control.thread_exited();
        }
        let outcome = control.wait();
        // Make sure every vCPU leaves, then join them.
        control.stop(Ok(ExitReason::Killed));
        control.take_threads();
        for t in threads {
            // A vCPU thread that panicked has nothing more to report.
            let _ = t.join();
        }
        if let Ok(mut s) = self.shared.serial.lock() {
            s.flush();
        }
        outcome
    }
}

/// The port-I/O devices: the UART (IRQ 4 through an irqfd) and the i8042.
struct LegacyDevices {
    bus: PioBus,
    serial: Arc<Mutex<Serial>>,
    i8042: Arc<Mutex<I8042>>,
    serial_irq: EventFd,
}

impl LegacyDevices {
    /// Wire them on a new port bus, fresh or with restored state.
    fn new(
        vm: &KvmVm,
        console: ConsoleConfig,
        panic: &PanicRecord,
        restore: Option<(&SerialState, &I8042State)>,
    ) -> Result<Self, SetupError> {
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| SetupError::Host {
            what: "eventfd for the serial IRQ",
            source,
        })?;
        vm.register_irqfd(&serial_irq, SERIAL_IRQ)?;
        let irq = serial_irq.try_clone().map_err(|source| SetupError::Host {
            what: "eventfd clone",
            source,
        })?;
        let mut serial = Serial::new(irq, ConsoleOut::new(console, panic.clone()));
        let mut i8042 = I8042::new();
        if let Some((s, i)) = restore {
            serial.restore_state(s);
            i8042.restore_state(i);
        }
        let serial = Arc::new(Mutex::new(serial));
        let i8042 = Arc::new(Mutex::new(i8042));
        let mut bus = PioBus::new();
        bus.insert(SERIAL_PORT_BASE, SERIAL_PORT_LEN, serial.clone())?;
        bus.insert(I8042_PORT_BASE, I8042_PORT_LEN, i8042.clone())?;
        Ok(Self {
            bus,
            serial,
            i8042,
            serial_irq,
        })
    }
}

/// Rebuild the serial port, the i8042 and the vsock device of a snapshot.
pub(crate) fn restore_devices(
    vm: &KvmVm,
    mem: &GuestMemory,
    state: &SnapshotState,
    config: RestoreConfig,
) -> Result<RestoredDevices, VmError> {
    let panic = PanicRecord::default();
    let legacy = LegacyDevices::new(
        vm,
        config.console,
        &panic,
        Some((&state.serial, &state.i8042)),
    )?;
    let mut mmio_bus = MmioBus::new();
    let vsock = match &state.vsock {
        Some(vs) => {
            let vc = VsockConfig {
                guest_cid: vs.device.guest_cid,
                uds_path: config.vsock_uds,
            };
            let device = VsockDevice::restore(&vc, &vs.device).map_err(SetupError::from)?;
            Some(wire_vsock(
                vm,
                mem,
                &mut mmio_bus,
                device,
                Some(&vs.transport),
            )?)
        }
        None => None,
    };
    Ok(RestoredDevices {
        legacy,
        mmio: mmio_bus,
        vsock,
        panic,
    })
}

/// Put the vsock device on the MMIO bus: interrupts through an irqfd on
/// [`VIRTIO_VSOCK_IRQ`], and one KVM ioeventfd per queue on its QueueNotify
/// register (datamatch = queue index), so notifies never exit to user space.
fn attach_vsock(
    vm: &KvmVm,
    mem: &GuestMemory,
    bus: &mut MmioBus,
    config: &VsockConfig,
) -> Result<(VsockHandle, Arc<Mutex<MmioTransport>>), SetupError> {
    let device = VsockDevice::new(config)?;
    wire_vsock(vm, mem, bus, device, None)
}

/// Wire a vsock device (new, or restored with its transport's state).
fn wire_vsock(
    vm: &KvmVm,
    mem: &GuestMemory,
    bus: &mut MmioBus,
    device: VsockDevice,
    restore: Option<&MmioTransportState>,
) -> Result<(VsockHandle, Arc<Mutex<MmioTransport>>), SetupError> {
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| SetupError::Host {
        what: "eventfd for the vsock IRQ",
        source,
    })?;
    vm.register_irqfd(&irq, VIRTIO_VSOCK_IRQ)?;
    let notify = VIRTIO_VSOCK_MMIO_BASE + mmio::regs::QUEUE_NOTIFY;
    for (i, evt) in device.queue_events().iter().enumerate() {
        vm.register_ioevent(evt, notify, i as u32)?;
    }
    let handle = device.handle();
    let interrupt = Arc::new(Interrupt::new(irq));
    let transport = match restore {
        None => MmioTransport::new(Box::new(device), mem.clone(), interrupt),
        Some(state) => MmioTransport::restore(Box::new(device), mem.clone(), interrupt, state)
            .map_err(|e| SetupError::BadState(format!("virtio-vsock transport: {e}")))?,
    };
    let transport = Arc::new(Mutex::new(transport));
    bus.insert(
        VIRTIO_VSOCK_MMIO_BASE,
        VIRTIO_MMIO_WINDOW,
        transport.clone(),
    )?;
    Ok((handle, transport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_limits() {
        assert!(validate_vcpus(1, None).is_ok());
        assert!(validate_vcpus(32, Some(288)).is_ok());
        let e = validate_vcpus(0, None).unwrap_err().to_string();
        assert!(e.starts_with("0 vCPUs") && e.contains("1 to 32"), "{e}");
        let e = validate_vcpus(33, Some(288)).unwrap_err().to_string();
        assert!(
            e.contains("33") && e.contains("1 to 32") && e.contains("KVM_CAP_MAX_VCPUS 288"),
            "{e}"
        );
        let e = validate_vcpus(8, Some(4)).unwrap_err().to_string();
        assert!(e.contains("1 to 4"), "{e}");
    }
}
