//! Pinning stage threads to cores.
//!
//! `core_affinity::get_core_ids()` lists only the cores in the calling thread's
//! current affinity mask, so once any thread pinned itself the answer shrinks.
//! The list is therefore read once per process, the first time a builder needs
//! it, before any stage thread of ours has pinned itself.

use std::sync::OnceLock;

static CORES: OnceLock<Vec<usize>> = OnceLock::new();

/// The cores the thread that first asked could run on (its affinity mask,
/// usually the process's), sorted; read once per process. A program that
/// pins threads of its own calls it (or builds a bus) before they pin.
pub fn available_cores() -> &'static [usize] {
    CORES.get_or_init(|| {
        let mut ids: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        ids.sort_unstable();
        ids
    })
}

/// Pins the calling thread to `core`; returns whether the OS accepted it.
pub(crate) fn pin_current_thread(core: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}
