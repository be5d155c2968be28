//! The mapped file (or, under loom, the same structures on the heap) and
//! the only raw access to it: each accessor checks its index against this
//! process's own [`Layout`], which was checked against the mapping's length
//! before the region was made.

#[cfg(not(loom))]
use std::path::PathBuf;

use super::layout::{ConsumerEntry, Control, Header, Layout, ProducerEntry};
use super::os::Identity;
use crate::loom::{AtomicU32, AtomicU64};

/// A bus's shared memory.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) layout: Layout,
    mask: u64,
    #[cfg(not(loom))]
    map: memmap2::MmapRaw,
    #[cfg(not(loom))]
    pub(crate) path: PathBuf,
    #[cfg(loom)]
    model: Model,
}

// SAFETY: every field of the mapping reached through `&Region` is an atomic,
// except the ring's slots, which are reached only through raw pointers whose
// use the sequencing protocol (claim, mark or cursor, consumer sequences)
// orders; the mapping itself stays valid until the region drops.
#[cfg(not(loom))]
unsafe impl Send for Region {}
// SAFETY: as for Send.
#[cfg(not(loom))]
unsafe impl Sync for Region {}

impl Region {
    /// Wraps a mapping of at least `layout.len` bytes.
    #[cfg(not(loom))]
    pub(crate) fn mapped(map: memmap2::MmapRaw, layout: Layout, path: PathBuf) -> Self {
        assert!(
            map.len() >= layout.len,
            "the mapping is shorter than its layout"
        );
        assert_eq!(map.as_ptr() as usize % super::layout::MAX_ALIGN, 0);
        Self {
            mask: layout.capacity as u64 - 1,
            layout,
            map,
            path,
        }
    }

    /// The mapping back, to make a region of another layout.
    #[cfg(not(loom))]
    pub(crate) fn into_map(self) -> memmap2::MmapRaw {
        self.map
    }

    #[cfg(not(loom))]
    fn at<T>(&self, offset: usize) -> &T {
        debug_assert!(offset + core::mem::size_of::<T>() <= self.layout.len);
        debug_assert_eq!(offset % core::mem::align_of::<T>(), 0);
        // SAFETY: the offset comes from this process's layout, which fits the
        // mapping (checked in `mapped`) and aligns every structure to its
        // alignment (the mapping starts on a page); every structure is made
        // of atomics, for which all bytes, zeros included, are a valid value,
        // and which may be shared between threads and processes.
        unsafe { &*(self.map.as_ptr().add(offset) as *const T) }
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        #[cfg(not(loom))]
        return self.at(0);
        #[cfg(loom)]
        return &self.model.header;
    }

    #[inline]
    pub(crate) fn control(&self) -> &Control {
        #[cfg(not(loom))]
        return self.at(self.layout.control);
        #[cfg(loom)]
        return &self.model.control;
    }

    /// Producer entry `i`, or `None` past the table.
    #[inline]
    pub(crate) fn producer(&self, i: usize) -> Option<&ProducerEntry> {
        if i >= self.layout.producers {
            return None;
        }
        #[cfg(not(loom))]
        return Some(
            self.at(self.layout.producer_table + i * core::mem::size_of::<ProducerEntry>()),
        );
        #[cfg(loom)]
        return self.model.producers.get(i);
    }

    /// Consumer entry `i`, or `None` past the table.
    #[inline]
    pub(crate) fn consumer(&self, i: usize) -> Option<&ConsumerEntry> {
        if i >= self.layout.consumers {
            return None;
        }
        #[cfg(not(loom))]
        return Some(
            self.at(self.layout.consumer_table + i * core::mem::size_of::<ConsumerEntry>()),
        );
        #[cfg(loom)]
        return self.model.consumers.get(i);
    }

    /// The availability mark of `seq`'s slot (multi producer only).
    pub(crate) fn mark(&self, seq: u64) -> &AtomicU64 {
        debug_assert!(self.layout.multi);
        let i = (seq & self.mask) as usize;
        #[cfg(not(loom))]
        return self.at(self.layout.marks + i * 8);
        #[cfg(loom)]
        return &self.model.marks[i];
    }

    /// log2 of the capacity: `seq >> shift` is the round `seq` belongs to.
    #[inline]
    pub(crate) fn shift(&self) -> u32 {
        // The capacity is a power of two: its trailing zeros (one
        // instruction on x86-64's baseline, where a population count is a
        // dozen).
        (self.mask + 1).trailing_zeros()
    }

    /// The slot of `seq`, for `f` to read (`write == false`) or write.
    ///
    /// # Safety
    /// The caller holds the right the protocol gives it to the slot: a
    /// producer its claimed and marked (or, single, unpublished) slot, a
    /// consumer a published slot below what gates the producers.
    #[inline(always)]
    pub(crate) unsafe fn with_slot<R>(
        &self,
        seq: u64,
        write: bool,
        f: impl FnOnce(*mut u8) -> R,
    ) -> R {
        let i = (seq & self.mask) as usize;
        #[cfg(not(loom))]
        {
            let _ = write;
            // SAFETY: `i` is below the capacity, so the slot lies inside the
            // ring, inside the mapping.
            f(unsafe {
                self.map
                    .as_mut_ptr()
                    .add(self.layout.ring + i * self.layout.event_size)
            })
        }
        #[cfg(loom)]
        {
            let ptr = self.model.ring[i * self.model.words_per_slot].get() as *mut u8;
            if write {
                self.model.shadow[i].with_mut(|_| f(ptr))
            } else {
                self.model.shadow[i].with(|_| f(ptr))
            }
        }
    }

    /// Whether `who` still runs.
    pub(crate) fn alive(&self, who: Identity) -> bool {
        #[cfg(not(loom))]
        return super::os::alive(who);
        // Pid 0 is no process: an orphaned entry's (table.rs).
        #[cfg(loom)]
        return who.pid != 0
            && !self.model.dead[who.pid as usize % 8].load(crate::loom::Ordering::SeqCst);
    }

    /// Sleeps while the wake word holds `seen` (see [`super::os::futex_wait`]).
    pub(crate) fn futex_wait(&self, seen: u32, timeout: std::time::Duration) {
        let word: &AtomicU32 = &self.control().wake.word;
        #[cfg(not(loom))]
        super::os::futex_wait(word, seen, timeout);
        #[cfg(loom)]
        {
            let _ = timeout;
            self.model.futex.wait(word, seen);
        }
    }

    /// Wakes every sleeper on the wake word.
    pub(crate) fn futex_wake(&self) {
        #[cfg(not(loom))]
        super::os::futex_wake(&self.control().wake.word);
        #[cfg(loom)]
        self.model.futex.wake();
    }
}

/// The file's structures on the heap, for loom models.
#[cfg(loom)]
#[derive(Debug)]
struct Model {
    header: Header,
    control: Control,
    producers: Box<[ProducerEntry]>,
    consumers: Box<[ConsumerEntry]>,
    marks: Box<[AtomicU64]>,
    ring: Box<[core::cell::UnsafeCell<u64>]>,
    words_per_slot: usize,
    shadow: Box<[loom::cell::UnsafeCell<()>]>,
    dead: [crate::loom::AtomicBool; 8],
    futex: super::os::ModelFutex,
}

#[cfg(loom)]
impl Region {
    /// The structures of `layout` on the heap, all zeros.
    pub(crate) fn model(layout: Layout) -> Self {
        assert!(
            layout.event_align <= 8,
            "loom models use events aligned to at most 8"
        );
        let words_per_slot = layout.event_size.div_ceil(8);
        let model = Model {
            header: Header::default(),
            control: Control::default(),
            producers: (0..layout.producers)
                .map(|_| ProducerEntry::default())
                .collect(),
            consumers: (0..layout.consumers)
                .map(|_| ConsumerEntry::default())
                .collect(),
            marks: (0..layout.capacity).map(|_| AtomicU64::new(0)).collect(),
            ring: (0..layout.capacity * words_per_slot)
                .map(|_| core::cell::UnsafeCell::new(0))
                .collect(),
            words_per_slot,
            shadow: (0..layout.capacity)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
            dead: Default::default(),
            futex: Default::default(),
        };
        Self {
            mask: layout.capacity as u64 - 1,
            layout,
            model,
        }
    }

    /// Marks model process `pid` dead.
    pub(crate) fn kill(&self, pid: u32) {
        self.model.dead[pid as usize % 8].store(true, crate::loom::Ordering::SeqCst);
    }
}

// SAFETY: under loom the ring's cells are reached only through `with_slot`,
// which loom's shadow cells check for races; everything else is atomics.
#[cfg(loom)]
unsafe impl Send for Region {}
// SAFETY: as for Send.
#[cfg(loom)]
unsafe impl Sync for Region {}
