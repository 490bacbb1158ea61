//! `--gdb`: JIT code registered with gdb as it is published, unregistered as it is reclaimed.
//!
//! GDB's JIT interface (the GDB manual, "JIT Compilation Interface") takes one in-memory
//! object file per registration, and gdb does work per registration over everything it
//! knows (it re-reads symbols and re-sets breakpoints): one registration per function makes
//! a program of n functions cost n² there. So functions are registered in images of up to
//! [`IMAGE_FUNCTIONS`], one batch of the runtime's events (one commit: the whole program at
//! start) filling as few images as it can. A reclaimed function leaves its image: the image
//! is unregistered and, if functions remain in it, registered again without it, which costs
//! at most one image's worth of work per reclamation.

use jitvm_debuginfo::gdb::{register, Registration};
use jitvm_debuginfo::{elf, FunctionInfo};
use std::collections::{HashMap, VecDeque};

/// The most functions one registered image holds.
pub const IMAGE_FUNCTIONS: usize = 256;

/// A function registered with gdb, by the address of the blob it is in (the runtime names a
/// reclaimed blob by that address; the function starts at its entry point).
pub type Registered = (u64, FunctionInfo);

/// One registered object file and the functions it describes.
struct Image {
    functions: Vec<Registered>,
    _registration: Registration,
}

/// What gdb has been told: the registered images, and which image describes each address.
#[derive(Default)]
pub struct GdbImages {
    images: HashMap<u64, Image>,
    /// By blob address: the images describing a blob there, oldest first. A reclaimed blob's
    /// event may come after a new blob at its address was published (the runtime fires events
    /// after releasing its locks), and the reclaimed one is then the oldest.
    at: HashMap<u64, VecDeque<u64>>,
    next_id: u64,
}

impl GdbImages {
    /// Registers `functions`, newly published, in images of up to [`IMAGE_FUNCTIONS`].
    pub fn add(&mut self, functions: Vec<Registered>) {
        for chunk in functions.chunks(IMAGE_FUNCTIONS) {
            let id = self.next_id;
            self.next_id += 1;
            let Some(image) = registered(chunk.to_vec()) else {
                continue;
            };
            for (blob, _) in &image.functions {
                self.at.entry(*blob).or_default().push_back(id);
            }
            self.images.insert(id, image);
        }
    }

    /// Unregisters the blobs at `addrs`, reclaimed: each image that held one is registered
    /// again with the functions it has left.
    pub fn remove(&mut self, addrs: &[u64]) {
        let mut leaving: HashMap<u64, Vec<u64>> = HashMap::new();
        for &addr in addrs {
            let Some(ids) = self.at.get_mut(&addr) else {
                continue;
            };
            if let Some(id) = ids.pop_front() {
                leaving.entry(id).or_default().push(addr);
            }
            if ids.is_empty() {
                self.at.remove(&addr);
            }
        }
        for (id, gone) in leaving {
            let Some(image) = self.images.remove(&id) else {
                continue;
            };
            let left: Vec<Registered> = image
                .functions
                .iter()
                .filter(|(blob, _)| !gone.contains(blob))
                .cloned()
                .collect();
            // Unregistered before its replacement registers, so gdb never sees one address
            // described twice.
            drop(image);
            if left.is_empty() {
                continue;
            }
            match registered(left) {
                Some(image) => {
                    self.images.insert(id, image);
                }
                None => self.forget(id),
            }
        }
    }

    /// Functions registered now.
    pub fn functions(&self) -> usize {
        self.images.values().map(|i| i.functions.len()).sum()
    }

    /// Drops image `id` from the address index (it could not be registered again).
    fn forget(&mut self, id: u64) {
        self.at.retain(|_, ids| {
            ids.retain(|&i| i != id);
            !ids.is_empty()
        });
    }
}

/// `functions` as one object file, registered; `None` (with a warning) if they cannot be
/// described, which leaves gdb without their names but the program running.
fn registered(functions: Vec<Registered>) -> Option<Image> {
    let infos: Vec<FunctionInfo> = functions.iter().map(|(_, f)| f.clone()).collect();
    match elf::image(&infos) {
        Ok(object) => Some(Image {
            functions,
            _registration: register(object),
        }),
        Err(e) => {
            log::warn!("--gdb: {} functions not registered: {e}", functions.len());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(addr: u64) -> Registered {
        let info = FunctionInfo {
            name: format!("jitvm:f{addr:x} [baseline]"),
            addr: addr + 16,
            len: 16,
            ..FunctionInfo::default()
        };
        (addr, info)
    }

    #[test]
    fn a_batch_fills_as_few_images_as_it_can() {
        let mut g = GdbImages::default();
        g.add((0..600).map(|k| function(0x10000 + 16 * k)).collect());
        assert_eq!(g.images.len(), 3);
        assert_eq!(g.functions(), 600);
    }

    #[test]
    fn a_reclaimed_function_leaves_its_image_and_the_rest_stay_registered() {
        let mut g = GdbImages::default();
        g.add((0..4).map(|k| function(0x10000 + 16 * k)).collect());
        g.remove(&[0x10010]);
        assert_eq!(g.functions(), 3);
        assert!(!g.at.contains_key(&0x10010));
        g.remove(&[0x10000, 0x10020, 0x10030]);
        assert_eq!(g.functions(), 0);
        assert!(g.images.is_empty() && g.at.is_empty());
    }

    #[test]
    fn reclaiming_a_reused_address_removes_the_older_function() {
        let mut g = GdbImages::default();
        g.add(vec![function(0x10000)]);
        let mut newer = function(0x10000);
        newer.1.name = "jitvm:g [opt]".into();
        g.add(vec![newer]);
        // The old blob's reclamation reported after the new blob's publication.
        g.remove(&[0x10000]);
        let names: Vec<&str> = g
            .images
            .values()
            .flat_map(|i| i.functions.iter().map(|(_, f)| f.name.as_str()))
            .collect();
        assert_eq!(names, ["jitvm:g [opt]"]);
    }
}
