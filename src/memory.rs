//! Memory tracking: this process's resident memory (current and peak, from `/proc`), and on
//! NVIDIA GPUs the device's memory through NVML, loaded at run time (absent NVML is not an
//! error: the GPU part is simply missing).

use serde::Serialize;

/// One reading of memory use.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemorySnapshot {
    /// Resident set size of this process, bytes.
    pub process_resident_bytes: Option<u64>,
    /// Peak resident set size of this process so far, bytes.
    pub process_peak_resident_bytes: Option<u64>,
    /// GPU memory, when NVML is available.
    pub gpu: Option<GpuMemory>,
}

/// Memory of one GPU as NVML reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuMemory {
    /// Device index.
    pub index: u32,
    /// Total bytes.
    pub total_bytes: u64,
    /// Used bytes (all processes).
    pub used_bytes: u64,
    /// Free bytes.
    pub free_bytes: u64,
    /// Bytes used by this process, when the driver reports it.
    pub process_bytes: Option<u64>,
}

/// Reads the current snapshot (`track_vram_usage` of the backend).
pub fn track_vram_usage() -> MemorySnapshot {
    let (resident, peak) = process_memory();
    MemorySnapshot {
        process_resident_bytes: resident,
        process_peak_resident_bytes: peak,
        gpu: nvml::gpu_memory(0),
    }
}

/// Returns memory freed inside the allocator to the operating system (glibc `malloc_trim`);
/// a no-op on other platforms.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap structures; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// (VmRSS, VmHWM) of this process from `/proc/self/status`, in bytes.
pub fn process_memory() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim();
            rest.parse::<u64>().ok().map(|kb| kb * 1024)
        })
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The minimal NVML surface, resolved with `dlopen` so that machines without the NVIDIA driver
/// need nothing.
mod nvml {
    use std::ffi::c_void;
    use std::sync::OnceLock;

    use super::GpuMemory;

    #[repr(C)]
    struct Memory {
        total: u64,
        free: u64,
        used: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    struct ProcessInfo {
        pid: u32,
        used_gpu_memory: u64,
        gpu_instance_id: u32,
        compute_instance_id: u32,
    }

    type InitFn = unsafe extern "C" fn() -> i32;
    type HandleFn = unsafe extern "C" fn(u32, *mut *mut c_void) -> i32;
    type MemoryFn = unsafe extern "C" fn(*mut c_void, *mut Memory) -> i32;
    type ProcessesFn = unsafe extern "C" fn(*mut c_void, *mut u32, *mut ProcessInfo) -> i32;

    struct Nvml {
        _library: libloading::Library,
        handle_by_index: HandleFn,
        memory_info: MemoryFn,
        processes: Option<ProcessesFn>,
    }

    fn load() -> Option<Nvml> {
        // SAFETY: loading the NVIDIA management library runs its initialisers, which have no
        // preconditions; the symbols are looked up with the signatures NVML documents.
        unsafe {
            let library = libloading::Library::new("libnvidia-ml.so.1").ok()?;
            let init: InitFn = *library.get::<InitFn>(b"nvmlInit_v2\0").ok()?;
            if init() != 0 {
                return None;
            }
            let handle_by_index = *library
                .get::<HandleFn>(b"nvmlDeviceGetHandleByIndex_v2\0")
                .ok()?;
            let memory_info = *library.get::<MemoryFn>(b"nvmlDeviceGetMemoryInfo\0").ok()?;
            let processes = library
                .get::<ProcessesFn>(b"nvmlDeviceGetComputeRunningProcesses_v3\0")
                .ok()
                .map(|f| *f);
            Some(Nvml {
                _library: library,
                handle_by_index,
                memory_info,
                processes,
            })
        }
    }

    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();

    /// Memory of GPU `index`, or `None` without NVML or that device.
    pub fn gpu_memory(index: u32) -> Option<GpuMemory> {
        let nvml = NVML.get_or_init(load).as_ref()?;
        // SAFETY: the handle and output pointers are valid for the duration of each call, as
        // NVML requires; buffer sizes are passed in `count`.
        unsafe {
            let mut device = std::ptr::null_mut();
            if (nvml.handle_by_index)(index, &mut device) != 0 {
                return None;
            }
            let mut memory = Memory {
                total: 0,
                free: 0,
                used: 0,
            };
            if (nvml.memory_info)(device, &mut memory) != 0 {
                return None;
            }
            let process_bytes = nvml.processes.and_then(|list| {
                let mut infos = [ProcessInfo {
                    pid: 0,
                    used_gpu_memory: 0,
                    gpu_instance_id: 0,
                    compute_instance_id: 0,
                }; 64];
                let mut count = infos.len() as u32;
                if list(device, &mut count, infos.as_mut_ptr()) != 0 {
                    return None;
                }
                let pid = std::process::id();
                infos
                    .iter()
                    .take(count as usize)
                    .find(|p| p.pid == pid)
                    .map(|p| p.used_gpu_memory)
            });
            Some(GpuMemory {
                index,
                total_bytes: memory.total,
                used_bytes: memory.used,
                free_bytes: memory.free,
                process_bytes,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_memory_is_read_from_proc() {
        let (resident, peak) = process_memory();
        let (resident, peak) = (resident.unwrap(), peak.unwrap());
        assert!(
            resident > 1 << 20,
            "a Rust test process uses more than 1 MiB: {resident}"
        );
        assert!(peak >= resident);
    }
}
