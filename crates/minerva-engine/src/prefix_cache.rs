//! Full pages of tokens that sequences have computed, kept for later sequences that begin
//! with the same tokens (a shared system prompt, the earlier turns of a conversation): a
//! sequence that finds its first pages here takes their keys and values as they are and
//! computes only the rest.
//!
//! An entry is one page of tokens following its parent's page (the first page has none), so
//! a prompt matches entry by entry from its start, and two prompts that differ anywhere in a
//! page part there. An entry names the pages that hold its positions in each layer group;
//! [`crate::kv_cache::PagedKvCache`] counts the holders of every page (sequences and
//! entries), so a page shared by both is freed only when the last one lets it go.

use std::collections::HashMap;

/// A table slot with no page: positions a sliding window no longer sees.
pub(crate) const NO_PAGE: i32 = -1;

pub(crate) struct Entry {
    parent: Option<usize>,
    tokens: Vec<u32>,
    /// Per layer group, the page holding this entry's positions ([`NO_PAGE`] where a
    /// sliding-window group has let it go).
    pub(crate) pages: Vec<i32>,
    /// Entries that follow this one.
    children: usize,
    /// Live sequences whose published pages end here (they add its next child).
    tails: usize,
    /// When it was last matched or made (a logical clock).
    used: u64,
}

/// The index of cached pages; see the module documentation.
#[derive(Default)]
pub(crate) struct PrefixCache {
    entries: Vec<Option<Entry>>,
    index: HashMap<(Option<usize>, Vec<u32>), usize>,
    clock: u64,
    /// Entries ever inserted: a sequence that found no more than it holds need not look
    /// again until this moves.
    insertions: u64,
}

impl PrefixCache {
    /// The entries that match `tokens` page by page from its start (`page_size` tokens each),
    /// marked as used.
    pub(crate) fn matching(&mut self, tokens: &[u32], page_size: usize) -> Vec<usize> {
        let mut chain = Vec::new();
        let mut parent = None;
        for page in tokens.chunks_exact(page_size) {
            let Some(id) = self.child(parent, page) else {
                break;
            };
            self.clock += 1;
            self.entry_mut(id).used = self.clock;
            chain.push(id);
            parent = Some(id);
        }
        chain
    }

    /// The entry for `tokens` (one page) after `parent`, if cached.
    pub(crate) fn child(&self, parent: Option<usize>, tokens: &[u32]) -> Option<usize> {
        self.index.get(&(parent, tokens.to_vec())).copied()
    }

    /// Caches `tokens` (one page) after `parent`, held in `pages` (one per group; the caller
    /// counts the entry as their holder).
    pub(crate) fn insert(
        &mut self,
        parent: Option<usize>,
        tokens: &[u32],
        pages: Vec<i32>,
    ) -> usize {
        self.clock += 1;
        self.insertions += 1;
        let entry = Entry {
            parent,
            tokens: tokens.to_vec(),
            pages,
            children: 0,
            tails: 0,
            used: self.clock,
        };
        let id = match self.entries.iter().position(Option::is_none) {
            Some(free) => {
                self.entries[free] = Some(entry);
                free
            }
            None => {
                self.entries.push(Some(entry));
                self.entries.len() - 1
            }
        };
        if let Some(p) = parent {
            self.entry_mut(p).children += 1;
        }
        self.index.insert((parent, tokens.to_vec()), id);
        id
    }

    pub(crate) fn insertions(&self) -> u64 {
        self.insertions
    }

    pub(crate) fn entry(&self, id: usize) -> &Entry {
        self.entries[id].as_ref().expect("a live entry")
    }

    pub(crate) fn entry_mut(&mut self, id: usize) -> &mut Entry {
        self.entries[id].as_mut().expect("a live entry")
    }

    /// A sequence's published pages end at `id` (it stays while they do).
    pub(crate) fn pin(&mut self, id: usize) {
        self.entry_mut(id).tails += 1;
    }

    pub(crate) fn unpin(&mut self, id: usize) {
        self.entry_mut(id).tails -= 1;
    }

    /// The least recently used entry that nothing builds on (no children, no sequence's
    /// tail): the one to drop when pages run short.
    pub(crate) fn oldest_leaf(&self) -> Option<usize> {
        self.oldest(|e| e.children == 0 && e.tails == 0)
    }

    /// The least recently used entry holding a page of group `g`.
    pub(crate) fn oldest_holding(&self, g: usize) -> Option<usize> {
        self.oldest(|e| e.pages[g] != NO_PAGE)
    }

    fn oldest(&self, pick: impl Fn(&Entry) -> bool) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(id, e)| e.as_ref().filter(|e| pick(e)).map(|e| (e.used, id)))
            .min()
            .map(|(_, id)| id)
    }

    /// Forgets leaf entry `id`; returns its pages for the caller to let go.
    pub(crate) fn remove(&mut self, id: usize) -> Vec<i32> {
        let entry = self.entries[id].take().expect("a live entry");
        debug_assert!(
            entry.children == 0 && entry.tails == 0,
            "only leaves are removed"
        );
        if let Some(p) = entry.parent {
            self.entry_mut(p).children -= 1;
        }
        self.index.remove(&(entry.parent, entry.tokens));
        entry.pages
    }

    /// Entries cached.
    pub(crate) fn len(&self) -> usize {
        self.entries.iter().flatten().count()
    }
}
