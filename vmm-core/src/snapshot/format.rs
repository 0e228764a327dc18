//! The snapshot state file: a small header, then the postcard encoding of
//! the host facts and the VM state.
//!
//! Layout (integers little-endian):
//!
//! | bytes | field                                  |
//! |-------|----------------------------------------|
//! | 8     | [`MAGIC`]                              |
//! | 4     | format version ([`FORMAT_VERSION`])    |
//! | 8     | body length                            |
//! | 4     | CRC-32 of the body                     |
//! | ...   | body: postcard of `(HostFacts, T)`     |
//!
//! The host facts go first so that a snapshot from another host or embervm
//! build is refused with the difference named, before its state (whose
//! encoding may differ between builds) is decoded.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::SnapshotError;

/// The first 8 bytes of every state file.
pub const MAGIC: [u8; 8] = *b"EMBRSNAP";
/// The state file format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the fixed header before the body.
pub const HEADER_LEN: u64 = 24;
/// Largest body accepted; anything longer is refused before allocating.
pub const MAX_BODY_LEN: u64 = 64 << 20;

/// One entry of the host's `KVM_GET_SUPPORTED_CPUID` table.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidFact {
    /// Leaf (EAX input).
    pub function: u32,
    /// Subleaf (ECX input).
    pub index: u32,
    /// KVM entry flags.
    pub flags: u32,
    /// Output EAX.
    pub eax: u32,
    /// Output EBX.
    pub ebx: u32,
    /// Output ECX.
    pub ecx: u32,
    /// Output EDX.
    pub edx: u32,
}

/// What must be the same on the host that restores a snapshot as on the one
/// that took it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HostFacts {
    /// The embervm version (`CARGO_PKG_VERSION`).
    pub vmm_version: String,
    /// `KVM_GET_API_VERSION`.
    pub kvm_api_version: i32,
    /// `KVM_GET_SUPPORTED_CPUID`, in KVM's order.
    pub cpuid: Vec<CpuidFact>,
    /// `(capability number, KVM_CHECK_EXTENSION value)` for each capability
    /// the snapshot depends on.
    pub caps: Vec<(u32, i32)>,
}

impl CpuidFact {
    /// Clear the fields that name the host CPU the caller happened to run
    /// on (some KVMs fill them in): they differ between two calls on the
    /// same host and say nothing about what a guest may use. Leaf 1 EBX
    /// bits 31..24 (initial APIC id), leaves 0xB and 0x1F EDX (x2APIC id),
    /// leaf 0x8000_001E EAX (extended APIC id).
    pub fn without_cpu_identity(mut self) -> Self {
        match self.function {
            0x1 => self.ebx &= 0x00ff_ffff,
            0xb | 0x1f => self.edx = 0,
            0x8000_001e => self.eax = 0,
            _ => {}
        }
        self
    }
}

impl HostFacts {
    /// Ask KVM for this host's facts, checking each capability in `caps`.
    pub fn collect(kvm: &kvm_ioctls::Kvm, caps: &[kvm_ioctls::Cap]) -> Result<Self, SnapshotError> {
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|source| SnapshotError::Kvm {
                what: "KVM_GET_SUPPORTED_CPUID",
                source,
            })?;
        Ok(Self {
            vmm_version: env!("CARGO_PKG_VERSION").to_string(),
            kvm_api_version: kvm.get_api_version(),
            cpuid: cpuid
                .as_slice()
                .iter()
                .map(|e| {
                    CpuidFact {
                        function: e.function,
                        index: e.index,
                        flags: e.flags,
                        eax: e.eax,
                        ebx: e.ebx,
                        ecx: e.ecx,
                        edx: e.edx,
                    }
                    .without_cpu_identity()
                })
                .collect(),
            caps: caps
                .iter()
                .map(|&c| (c as u32, kvm.check_extension_int(c)))
                .collect(),
        })
    }

    /// Check that a snapshot taken with facts `self` can be restored on a
    /// host with facts `here`; the error names the first difference.
    /// `path` is the state file, for the message.
    pub fn check_compatible(&self, here: &HostFacts, path: &Path) -> Result<(), SnapshotError> {
        match self.first_difference(here) {
            None => Ok(()),
            Some(detail) => Err(SnapshotError::OtherHost {
                path: path.to_path_buf(),
                detail,
            }),
        }
    }

    fn first_difference(&self, here: &HostFacts) -> Option<String> {
        if self.vmm_version != here.vmm_version {
            return Some(format!(
                "it was taken by embervm {}, this is embervm {}",
                self.vmm_version, here.vmm_version
            ));
        }
        if self.kvm_api_version != here.kvm_api_version {
            return Some(format!(
                "KVM API version is {} here, was {}",
                here.kvm_api_version, self.kvm_api_version
            ));
        }
        let key = |c: &CpuidFact| (c.function, c.index);
        let here_cpuid: BTreeMap<_, _> = here.cpuid.iter().map(|c| (key(c), c)).collect();
        for was in &self.cpuid {
            let leaf = format!("CPUID leaf {:#x} subleaf {:#x}", was.function, was.index);
            match here_cpuid.get(&key(was)) {
                None => return Some(format!("{leaf} is not offered by KVM here")),
                Some(now) if *now != was => {
                    return Some(format!("{leaf} differs: {}", cpuid_diff(was, now)))
                }
                Some(_) => {}
            }
        }
        let was_cpuid: BTreeMap<_, _> = self.cpuid.iter().map(|c| (key(c), c)).collect();
        if let Some(new) = here.cpuid.iter().find(|c| !was_cpuid.contains_key(&key(c))) {
            return Some(format!(
                "CPUID leaf {:#x} subleaf {:#x} is offered by KVM here but was not",
                new.function, new.index
            ));
        }
        let here_caps: BTreeMap<u32, i32> = here.caps.iter().copied().collect();
        for &(cap, was) in &self.caps {
            match here_caps.get(&cap) {
                None => return Some(format!("KVM capability {cap} was {was}, not checked here")),
                Some(&now) if now != was => {
                    return Some(format!("KVM capability {cap} is {now} here, was {was}"))
                }
                Some(_) => {}
            }
        }
        let was_caps: BTreeMap<u32, i32> = self.caps.iter().copied().collect();
        if let Some((cap, now)) = here.caps.iter().find(|(c, _)| !was_caps.contains_key(c)) {
            return Some(format!(
                "KVM capability {cap} is {now} here, was not checked"
            ));
        }
        None
    }
}

/// `"ebx 0x1 here, was 0x3; ecx ..."` for the registers that differ.
fn cpuid_diff(was: &CpuidFact, now: &CpuidFact) -> String {
    [
        ("flags", was.flags, now.flags),
        ("eax", was.eax, now.eax),
        ("ebx", was.ebx, now.ebx),
        ("ecx", was.ecx, now.ecx),
        ("edx", was.edx, now.edx),
    ]
    .iter()
    .filter(|(_, w, n)| w != n)
    .map(|(r, w, n)| format!("{r} {n:#x} here, was {w:#x}"))
    .collect::<Vec<_>>()
    .join("; ")
}

/// Write `facts` and `state` to the state file `path` (replaced atomically:
/// a temporary file beside it is written, synced and renamed over it).
/// Returns the file's length.
pub fn write_state<T: Serialize>(
    path: &Path,
    facts: &HostFacts,
    state: &T,
) -> Result<u64, SnapshotError> {
    let body =
        postcard::to_stdvec(&(facts, state)).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let body_len = body.len() as u64;
    if body_len > MAX_BODY_LEN {
        return Err(SnapshotError::Encode(format!(
            "the state is {body_len} bytes, more than the {MAX_BODY_LEN} bytes a state file holds"
        )));
    }
    let mut bytes = Vec::with_capacity(HEADER_LEN as usize + body.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&body_len.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    let mut tmp = TempFile::create(path)?;
    tmp.file
        .write_all(&bytes)
        .map_err(|e| SnapshotError::io("write", &tmp.tmp, e))?;
    tmp.commit()?;
    Ok(bytes.len() as u64)
}

/// Read the state file `path`, refusing it (with the reason) if it is
/// truncated, not a snapshot, of another format version, corrupt, or taken
/// on a host whose facts differ from `here`.
pub fn read_state<T: DeserializeOwned>(path: &Path, here: &HostFacts) -> Result<T, SnapshotError> {
    let body = read_body(path)?;
    let (facts, rest) = decode::<HostFacts>(path, &body, "host facts")?;
    facts.check_compatible(here, path)?;
    decode_last(path, rest)
}

/// Read the state file `path` without comparing its host facts with this
/// host's: for tools that inspect snapshots. All other checks apply.
pub fn read_state_unchecked_facts<T: DeserializeOwned>(
    path: &Path,
) -> Result<(HostFacts, T), SnapshotError> {
    let body = read_body(path)?;
    let (facts, rest) = decode::<HostFacts>(path, &body, "host facts")?;
    Ok((facts, decode_last(path, rest)?))
}

/// Check the header and return the verified body.
fn read_body(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let corrupt = |detail: String| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let file = File::open(path).map_err(|e| SnapshotError::io("open", path, e))?;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    (&file)
        .take(HEADER_LEN)
        .read_to_end(&mut header)
        .map_err(|e| SnapshotError::io("read", path, e))?;
    let magic_len = header.len().min(MAGIC.len());
    if header[..magic_len] != MAGIC[..magic_len] {
        return Err(SnapshotError::NotASnapshot {
            path: path.to_path_buf(),
        });
    }
    if header.len() < HEADER_LEN as usize {
        return Err(SnapshotError::Truncated {
            path: path.to_path_buf(),
            expected: HEADER_LEN,
            found: header.len() as u64,
        });
    }
    let word = |at: usize| <[u8; 4]>::try_from(&header[at..at + 4]).map(u32::from_le_bytes);
    let version = word(8).map_err(|e| corrupt(e.to_string()))?;
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Version {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let body_len = <[u8; 8]>::try_from(&header[12..20])
        .map(u64::from_le_bytes)
        .map_err(|e| corrupt(e.to_string()))?;
    let crc = word(20).map_err(|e| corrupt(e.to_string()))?;
    if body_len > MAX_BODY_LEN {
        return Err(corrupt(format!(
            "its header gives a body of {body_len} bytes, more than the {MAX_BODY_LEN} allowed"
        )));
    }
    let mut body = Vec::with_capacity(body_len as usize);
    (&file)
        .take(body_len + 1)
        .read_to_end(&mut body)
        .map_err(|e| SnapshotError::io("read", path, e))?;
    if (body.len() as u64) < body_len {
        return Err(SnapshotError::Truncated {
            path: path.to_path_buf(),
            expected: HEADER_LEN + body_len,
            found: HEADER_LEN + body.len() as u64,
        });
    }
    if body.len() as u64 > body_len {
        return Err(corrupt(format!(
            "it has data after the {} bytes its header gives",
            HEADER_LEN + body_len
        )));
    }
    if crc32fast::hash(&body) != crc {
        return Err(corrupt("checksum mismatch".to_string()));
    }
    Ok(body)
}

/// Decode one value from the front of `bytes`; returns it and the rest.
fn decode<'a, T: DeserializeOwned>(
    path: &Path,
    bytes: &'a [u8],
    what: &str,
) -> Result<(T, &'a [u8]), SnapshotError> {
    postcard::take_from_bytes(bytes).map_err(|e| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("cannot decode the {what}: {e}"),
    })
}

/// Decode the VM state, which must use up the rest of the body.
fn decode_last<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, SnapshotError> {
    let (state, rest) = decode(path, bytes, "VM state")?;
    if !rest.is_empty() {
        return Err(SnapshotError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{} bytes left over after the VM state", rest.len()),
        });
    }
    Ok(state)
}

/// A file written beside its destination and renamed over it once complete,
/// so the destination is always either the old file or the whole new one.
/// Removed on drop unless committed. Created mode 0600: snapshots hold guest
/// memory and registers.
pub(crate) struct TempFile {
    /// The open temporary file.
    pub(crate) file: File,
    /// Its path.
    pub(crate) tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl TempFile {
    /// Create a new temporary file in `dest`'s directory.
    pub(crate) fn create(dest: &Path) -> Result<Self, SnapshotError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = dest.file_name().ok_or_else(|| {
            SnapshotError::io(
                "write",
                dest,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
            )
        })?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_name = format!(".{}.{}.{n}.tmp", name.to_string_lossy(), std::process::id());
        let tmp = dest.with_file_name(tmp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| SnapshotError::io("create temporary file", &tmp, e))?;
        Ok(Self {
            file,
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// Sync the file, rename it over the destination and sync the directory.
    pub(crate) fn commit(mut self) -> Result<(), SnapshotError> {
        self.file
            .sync_all()
            .map_err(|e| SnapshotError::io("fsync", &self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| {
            SnapshotError::io(format!("rename {} to", self.tmp.display()), &self.dest, e)
        })?;
        self.committed = true;
        let dir = match self.dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SnapshotError::io("fsync directory", dir, e))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error that made us give up is the one to report.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A fresh directory for one test, removed when dropped.
#[cfg(test)]
pub(crate) struct ScratchDir(pub(crate) PathBuf);

#[cfg(test)]
impl ScratchDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("embervm-snap-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }
}

#[cfg(test)]
impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn apic_ids_are_not_host_facts() {
        let f = |function, eax, ebx, edx| CpuidFact {
            function,
            index: 0,
            flags: 0,
            eax,
            ebx,
            ecx: 0,
            edx,
        };
        assert_eq!(
            f(1, 0, 0x0102_0800, 0).without_cpu_identity(),
            f(1, 0, 0x0002_0800, 0)
        );
        assert_eq!(f(0xb, 0, 1, 7).without_cpu_identity().edx, 0);
        assert_eq!(f(0x8000_001e, 5, 0, 0).without_cpu_identity().eax, 0);
        assert_eq!(f(7, 1, 2, 3).without_cpu_identity(), f(7, 1, 2, 3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct State {
        regs: Vec<u64>,
        name: String,
    }

    fn facts() -> HostFacts {
        HostFacts {
            vmm_version: env!("CARGO_PKG_VERSION").to_string(),
            kvm_api_version: 12,
            cpuid: vec![
                CpuidFact {
                    function: 0,
                    index: 0,
                    flags: 0,
                    eax: 0xd,
                    ebx: 0x756e_6547,
                    ecx: 0x6c65_746e,
                    edx: 0x4965_6e69,
                },
                CpuidFact {
                    function: 7,
                    index: 0,
                    flags: 1,
                    eax: 0,
                    ebx: 0x029c_6fbf,
                    ecx: 0x4,
                    edx: 0,
                },
            ],
            caps: vec![(123, 1), (68, 0x1000)],
        }
    }

    fn state() -> State {
        State {
            regs: (0..40).map(|i| i * 0x1111).collect(),
            name: "vm".into(),
        }
    }

    fn written(dir: &ScratchDir) -> (PathBuf, Vec<u8>) {
        let path = dir.0.join("state.snap");
        let n = write_state(&path, &facts(), &state()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(n, bytes.len() as u64);
        (path, bytes)
    }

    fn read_err(path: &Path) -> SnapshotError {
        let e = read_state::<State>(path, &facts()).unwrap_err();
        assert!(
            e.to_string().contains(&path.display().to_string()),
            "message does not name the path: {e}"
        );
        e
    }

    #[test]
    fn round_trip() {
        let dir = ScratchDir::new("fmt-rt");
        let (path, bytes) = written(&dir);
        assert_eq!(&bytes[..8], b"EMBRSNAP");
        assert_eq!(read_state::<State>(&path, &facts()).unwrap(), state());
        let (f, s) = read_state_unchecked_facts::<State>(&path).unwrap();
        assert_eq!((f, s), (facts(), state()));
        // Rewriting replaces it and leaves no temporary files behind.
        write_state(&path, &facts(), &state()).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
        assert_eq!(names.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn truncated_anywhere() {
        let dir = ScratchDir::new("fmt-trunc");
        let (path, bytes) = written(&dir);
        for cut in [0, 3, 8, 12, 23, 24, 25, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            match read_err(&path) {
                SnapshotError::Truncated {
                    expected, found, ..
                } => {
                    assert_eq!(found, cut as u64);
                    let want = if cut < 24 { 24 } else { bytes.len() as u64 };
                    assert_eq!(expected, want, "cut at {cut}");
                }
                e => panic!("cut at {cut}: {e}"),
            }
        }
        std::fs::write(&path, &bytes[..30]).unwrap();
        let msg = read_err(&path).to_string();
        assert!(msg.contains("truncated") && msg.contains("take the snapshot again"));
    }

    #[test]
    fn bad_magic_version_and_trailing_data() {
        let dir = ScratchDir::new("fmt-hdr");
        let (path, bytes) = written(&dir);
        let mut b = bytes.clone();
        b[2] ^= 0x20;
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(
            read_err(&path),
            SnapshotError::NotASnapshot { .. }
        ));
        std::fs::write(&path, b"hello").unwrap();
        assert!(matches!(
            read_err(&path),
            SnapshotError::NotASnapshot { .. }
        ));

        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        match read_err(&path) {
            SnapshotError::Version {
                found, supported, ..
            } => assert_eq!((found, supported), (2, FORMAT_VERSION)),
            e => panic!("{e}"),
        }

        let mut b = bytes.clone();
        b.push(0);
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(read_err(&path), SnapshotError::Corrupt { .. }));
    }

    #[test]
    fn oversized_body_len_refused_before_reading() {
        let dir = ScratchDir::new("fmt-big");
        let (path, bytes) = written(&dir);
        let mut b = bytes.clone();
        b[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        match read_err(&path) {
            SnapshotError::Corrupt { detail, .. } => {
                assert!(detail.contains("body of"), "{detail}")
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn flipped_body_byte_is_checksum_mismatch() {
        let dir = ScratchDir::new("fmt-crc");
        let (path, bytes) = written(&dir);
        for at in [24, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[at] ^= 1;
            std::fs::write(&path, &b).unwrap();
            match read_err(&path) {
                SnapshotError::Corrupt { detail, .. } => assert_eq!(detail, "checksum mismatch"),
                e => panic!("{e}"),
            }
        }
    }

    #[test]
    fn undecodable_body_is_corrupt() {
        let dir = ScratchDir::new("fmt-dec");
        let (path, bytes) = written(&dir);
        // A valid header and checksum over a body of the wrong type.
        let body = postcard::to_stdvec(&(facts(), 7u8)).unwrap();
        let mut b = bytes[..12].to_vec();
        b.extend_from_slice(&(body.len() as u64).to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        b.extend_from_slice(&body);
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(read_err(&path), SnapshotError::Corrupt { .. }));
        // And one that is not even host facts.
        let body = [0xffu8; 5];
        let mut b = bytes[..12].to_vec();
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        b.extend_from_slice(&body);
        std::fs::write(&path, &b).unwrap();
        match read_err(&path) {
            SnapshotError::Corrupt { detail, .. } => assert!(detail.contains("host facts")),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn other_host_is_refused_with_the_difference() {
        let dir = ScratchDir::new("fmt-host");
        let (path, _) = written(&dir);
        let expect = |here: HostFacts, want: &str| {
            match read_state::<State>(&path, &here).unwrap_err() {
                SnapshotError::OtherHost { detail, .. } => {
                    assert!(detail.contains(want), "{detail:?} lacks {want:?}")
                }
                e => panic!("{e}"),
            }
            let msg = read_state::<State>(&path, &here).unwrap_err().to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        };
        let mut h = facts();
        h.cpuid[1].ebx ^= 1 << 5;
        expect(
            h,
            "CPUID leaf 0x7 subleaf 0x0 differs: ebx 0x29c6f9f here, was 0x29c6fbf",
        );
        let mut h = facts();
        h.cpuid.remove(1);
        expect(h, "CPUID leaf 0x7 subleaf 0x0 is not offered by KVM here");
        let mut h = facts();
        h.cpuid.push(CpuidFact {
            function: 0x8000_0001,
            ..h.cpuid[0]
        });
        expect(
            h,
            "CPUID leaf 0x80000001 subleaf 0x0 is offered by KVM here",
        );
        let mut h = facts();
        h.caps[0].1 = 0;
        expect(h, "KVM capability 123 is 0 here, was 1");
        let mut h = facts();
        h.caps.remove(1);
        expect(h, "KVM capability 68 was 4096, not checked here");
        let mut h = facts();
        h.kvm_api_version = 13;
        expect(h, "KVM API version is 13 here, was 12");
        let mut h = facts();
        h.vmm_version = "9.9.9".into();
        expect(h, "this is embervm 9.9.9");
        // Order of entries does not matter.
        let mut h = facts();
        h.cpuid.reverse();
        h.caps.reverse();
        assert!(facts().check_compatible(&h, &path).is_ok());
    }

    #[test]
    fn collect_on_this_host_if_kvm_is_there() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("no /dev/kvm: skipped");
            return;
        };
        let caps = [kvm_ioctls::Cap::Irqchip, kvm_ioctls::Cap::UserMemory];
        let a = HostFacts::collect(&kvm, &caps).unwrap();
        assert_eq!(a.kvm_api_version, 12);
        assert!(!a.cpuid.is_empty());
        assert_eq!(a.caps[0].0, kvm_bindings::KVM_CAP_IRQCHIP);
        let b = HostFacts::collect(&kvm, &caps).unwrap();
        a.check_compatible(&b, Path::new("x")).unwrap();
    }
}
