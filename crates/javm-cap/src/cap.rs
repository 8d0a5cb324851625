//! The host-side cap tree: [`Cap`], [`DataContent`], [`Pages`], [`Slot`].

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::iter::FusedIterator;

use crate::hash::{CNodeHasher, CapHash, DataHasher};

/// Size in bytes of one page of [`Pages`].
pub const PAGE_SIZE: usize = 4096;

/// One page of [`Pages`]: shared, immutable, page-sized.
pub type Page = [u8; PAGE_SIZE];

/// A capability.
///
/// `==` is structural: `Inline` and `Paged` data with the same bytes are
/// not `==`, nor are a `Ref` slot and the `Hash` slot of the same child.
/// Compare [`Cap::hash`] for content equality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cap {
    /// An immutable byte string.
    Data(DataContent),
    /// A capability node: an ordered list of slots.
    CNode {
        /// The slots, in order; a slot's index is its position here.
        slots: Vec<Slot>,
    },
}

/// The bytes of a [`Cap::Data`], in one of two representations that hash
/// the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataContent {
    /// Bytes held inline; the only form that crosses the wire.
    Inline(Vec<u8>),
    /// Bytes held as a host-side list of shared pages (the guest never sees
    /// this form).
    Paged(Pages),
}

/// One slot of a [`Cap::CNode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// No cap.
    Empty,
    /// A cap known only by its content hash.
    Hash(CapHash),
    /// A cap held by reference (host side); hashes as `Hash(child.hash())`.
    Ref(Arc<Cap>),
}

/// A byte string stored as a list of shared 4 KiB pages.
///
/// Invariant: `pages.len() == len.div_ceil(PAGE_SIZE)`, so every page but the
/// last is full and the last holds `1..=PAGE_SIZE` bytes. Bytes of the last
/// page past `len` are padding: they are not content, are ignored by `==`
/// and by hashing, and are zero in pages built by [`Pages::from_bytes`].
#[derive(Clone)]
pub struct Pages {
    pages: Vec<Arc<Page>>,
    len: usize,
}

/// The error of [`Pages::from_pages`]: the page count does not match the
/// byte length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCountMismatch {
    /// The byte length asked for.
    pub len: usize,
    /// The number of pages given.
    pub pages: usize,
    /// The number of pages `len` needs (`len.div_ceil(PAGE_SIZE)`).
    pub expected: usize,
}

impl fmt::Display for PageCountMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes need {} pages of {PAGE_SIZE} bytes, but {} were given",
            self.len, self.expected, self.pages
        )
    }
}

impl core::error::Error for PageCountMismatch {}

impl Pages {
    /// An empty page list (zero bytes, zero pages).
    #[must_use]
    pub const fn new() -> Self {
        Pages {
            pages: Vec::new(),
            len: 0,
        }
    }

    /// Copies `bytes` into fresh pages, zero-padding the last one.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let pages = bytes
            .chunks(PAGE_SIZE)
            .map(|chunk| {
                let mut page = [0u8; PAGE_SIZE];
                page[..chunk.len()].copy_from_slice(chunk);
                Arc::new(page)
            })
            .collect();
        Pages {
            pages,
            len: bytes.len(),
        }
    }

    /// Wraps existing pages holding `len` bytes.
    ///
    /// # Errors
    /// [`PageCountMismatch`] unless `pages.len() == len.div_ceil(PAGE_SIZE)`.
    pub fn from_pages(pages: Vec<Arc<Page>>, len: usize) -> Result<Self, PageCountMismatch> {
        let expected = len.div_ceil(PAGE_SIZE);
        if pages.len() != expected {
            return Err(PageCountMismatch {
                len,
                pages: pages.len(),
                expected,
            });
        }
        Ok(Pages { pages, len })
    }

    /// Length of the content in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the content is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pages (the last one may be partly padding; see [`Pages`]).
    #[must_use]
    pub fn pages(&self) -> &[Arc<Page>] {
        &self.pages
    }

    /// The content as one slice per page, padding excluded.
    #[must_use]
    pub fn chunks(&self) -> PageChunks<'_> {
        PageChunks {
            pages: self.pages.iter(),
            remaining: self.len,
        }
    }

    /// The content, byte by byte.
    pub fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.chunks().flatten().copied()
    }

    /// Copies the content into one `Vec`.
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for chunk in self.chunks() {
            out.extend_from_slice(chunk);
        }
        out
    }
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Pages {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.chunks().eq(other.chunks())
    }
}

impl Eq for Pages {}

impl fmt::Debug for Pages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pages")
            .field("len", &self.len)
            .field("pages", &self.pages.len())
            .finish()
    }
}

impl From<&[u8]> for Pages {
    fn from(bytes: &[u8]) -> Self {
        Pages::from_bytes(bytes)
    }
}

/// Iterator over the content of [`Pages`], one slice per page.
#[derive(Clone, Debug)]
pub struct PageChunks<'a> {
    pages: core::slice::Iter<'a, Arc<Page>>,
    remaining: usize,
}

impl<'a> Iterator for PageChunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        let page = self.pages.next()?;
        let take = self.remaining.min(PAGE_SIZE);
        self.remaining -= take;
        Some(&page[..take])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining.div_ceil(PAGE_SIZE);
        (n, Some(n))
    }
}

impl ExactSizeIterator for PageChunks<'_> {}

impl FusedIterator for PageChunks<'_> {}

/// Iterator over the content of a [`DataContent`] as byte slices.
#[derive(Clone, Debug)]
pub struct DataChunks<'a> {
    inner: DataChunksInner<'a>,
}

#[derive(Clone, Debug)]
enum DataChunksInner<'a> {
    Inline(Option<&'a [u8]>),
    Paged(PageChunks<'a>),
}

impl<'a> Iterator for DataChunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match &mut self.inner {
            DataChunksInner::Inline(slice) => slice.take(),
            DataChunksInner::Paged(chunks) => chunks.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.inner {
            DataChunksInner::Inline(slice) => {
                let n = usize::from(slice.is_some());
                (n, Some(n))
            }
            DataChunksInner::Paged(chunks) => chunks.size_hint(),
        }
    }
}

impl ExactSizeIterator for DataChunks<'_> {}

impl FusedIterator for DataChunks<'_> {}

impl DataContent {
    /// Length of the content in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            DataContent::Inline(bytes) => bytes.len(),
            DataContent::Paged(pages) => pages.len(),
        }
    }

    /// Whether the content is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The content as byte slices: one for `Inline` (none if it is empty),
    /// one per page for `Paged`.
    #[must_use]
    pub fn chunks(&self) -> DataChunks<'_> {
        let inner = match self {
            DataContent::Inline(bytes) if bytes.is_empty() => DataChunksInner::Inline(None),
            DataContent::Inline(bytes) => DataChunksInner::Inline(Some(bytes)),
            DataContent::Paged(pages) => DataChunksInner::Paged(pages.chunks()),
        };
        DataChunks { inner }
    }

    /// The content, byte by byte.
    pub fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.chunks().flatten().copied()
    }

    /// Copies the content into one `Vec`.
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            DataContent::Inline(bytes) => bytes.clone(),
            DataContent::Paged(pages) => pages.to_vec(),
        }
    }

    /// The content hash of a data cap with this content (streamed, page by
    /// page for `Paged`).
    #[must_use]
    pub fn hash(&self) -> CapHash {
        let mut hasher = DataHasher::new();
        for chunk in self.chunks() {
            hasher.update(chunk);
        }
        hasher.finalize()
    }
}

impl From<Vec<u8>> for DataContent {
    fn from(bytes: Vec<u8>) -> Self {
        DataContent::Inline(bytes)
    }
}

impl From<Pages> for DataContent {
    fn from(pages: Pages) -> Self {
        DataContent::Paged(pages)
    }
}

impl Slot {
    /// The hash this slot contributes to its CNode's hash: `None` if empty,
    /// else the child's hash (computed, for `Ref`).
    #[must_use]
    pub fn hash(&self) -> Option<CapHash> {
        match self {
            Slot::Empty => None,
            Slot::Hash(hash) => Some(*hash),
            Slot::Ref(cap) => Some(cap.hash()),
        }
    }

    /// Whether the slot is [`Slot::Empty`].
    #[must_use]
    pub fn is_empty(&self) -> bool {
        matches!(self, Slot::Empty)
    }
}

impl From<CapHash> for Slot {
    fn from(hash: CapHash) -> Self {
        Slot::Hash(hash)
    }
}

impl From<Arc<Cap>> for Slot {
    fn from(cap: Arc<Cap>) -> Self {
        Slot::Ref(cap)
    }
}

impl From<Cap> for Slot {
    fn from(cap: Cap) -> Self {
        Slot::Ref(Arc::new(cap))
    }
}

impl Cap {
    /// A data cap holding `bytes` inline.
    #[must_use]
    pub fn inline(bytes: impl Into<Vec<u8>>) -> Self {
        Cap::Data(DataContent::Inline(bytes.into()))
    }

    /// A data cap holding a copy of `bytes` in fresh pages.
    #[must_use]
    pub fn paged(bytes: &[u8]) -> Self {
        Cap::Data(DataContent::Paged(Pages::from_bytes(bytes)))
    }

    /// A CNode cap with these slots.
    #[must_use]
    pub fn cnode(slots: impl Into<Vec<Slot>>) -> Self {
        Cap::CNode {
            slots: slots.into(),
        }
    }

    /// The content hash of this cap (see the [crate docs](crate) for the
    /// encoding).
    ///
    /// Depends only on content: `Inline` and `Paged` data with equal bytes
    /// hash equal, and a `Ref(child)` slot hashes as `Hash(child.hash())`.
    ///
    /// The tree is walked with an explicit heap stack (no recursion, so deep
    /// trees cannot overflow the call stack), and a subtree shared through
    /// the same `Arc` several times in one call is hashed once.
    #[must_use]
    pub fn hash(&self) -> CapHash {
        match self {
            Cap::Data(data) => data.hash(),
            Cap::CNode { slots } => hash_cnode_tree(slots),
        }
    }
}

/// One CNode being hashed: the slots still to visit, the hasher so far, and
/// (for a `Ref` child) the `Arc` address to memoize its hash under.
struct Frame<'a> {
    slots: core::slice::Iter<'a, Slot>,
    hasher: CNodeHasher,
    memo_key: Option<usize>,
}

impl<'a> Frame<'a> {
    fn new(slots: &'a [Slot], memo_key: Option<usize>) -> Self {
        Frame {
            slots: slots.iter(),
            hasher: CNodeHasher::new(),
            memo_key,
        }
    }
}

fn hash_cnode_tree(root: &[Slot]) -> CapHash {
    // Keyed by `Arc` address. The addresses stay unique for the whole walk:
    // every `Arc` reached is borrowed from `root`, so none can be freed (and
    // its address reused) before this function returns.
    let mut memo: BTreeMap<usize, CapHash> = BTreeMap::new();
    let mut parents: Vec<Frame<'_>> = Vec::new();
    let mut current = Frame::new(root, None);
    loop {
        match current.slots.next() {
            Some(Slot::Empty) => {
                current.hasher.push(None);
            }
            Some(Slot::Hash(hash)) => {
                current.hasher.push(Some(*hash));
            }
            Some(Slot::Ref(child)) => {
                let key = Arc::as_ptr(child) as usize;
                if let Some(hash) = memo.get(&key) {
                    current.hasher.push(Some(*hash));
                    continue;
                }
                match &**child {
                    Cap::Data(data) => {
                        let hash = data.hash();
                        memo.insert(key, hash);
                        current.hasher.push(Some(hash));
                    }
                    Cap::CNode { slots } => {
                        let parent = core::mem::replace(&mut current, Frame::new(slots, Some(key)));
                        parents.push(parent);
                    }
                }
            }
            None => {
                let memo_key = current.memo_key;
                let hash = current.hasher.finalize();
                let Some(parent) = parents.pop() else {
                    return hash;
                };
                if let Some(key) = memo_key {
                    memo.insert(key, hash);
                }
                current = parent;
                current.hasher.push(Some(hash));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn pages_layout() {
        for len in [0, 1, 4095, 4096, 4097, 3 * 4096 + 5] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let pages = Pages::from_bytes(&bytes);
            assert_eq!(pages.len(), len);
            assert_eq!(pages.pages().len(), len.div_ceil(PAGE_SIZE));
            assert_eq!(pages.chunks().len(), len.div_ceil(PAGE_SIZE));
            assert_eq!(pages.to_vec(), bytes);
            assert!(pages.bytes().eq(bytes.iter().copied()));
            assert!(
                pages
                    .chunks()
                    .all(|c| !c.is_empty() && c.len() <= PAGE_SIZE)
            );
        }
    }

    #[test]
    fn pages_from_pages_checks_count() {
        let page = Arc::new([7u8; PAGE_SIZE]);
        assert!(Pages::from_pages(vec![], 0).is_ok());
        assert!(Pages::from_pages(vec![page.clone()], 1).is_ok());
        assert!(Pages::from_pages(vec![page.clone()], PAGE_SIZE).is_ok());
        assert_eq!(
            Pages::from_pages(vec![page.clone()], PAGE_SIZE + 1),
            Err(PageCountMismatch {
                len: PAGE_SIZE + 1,
                pages: 1,
                expected: 2
            })
        );
        assert!(Pages::from_pages(vec![page.clone()], 0).is_err());
        assert!(Pages::from_pages(vec![page.clone(), page], PAGE_SIZE).is_err());
    }

    #[test]
    fn pages_eq_ignores_padding() {
        let a = Pages::from_pages(vec![Arc::new([1u8; PAGE_SIZE])], 3).unwrap();
        let mut page = [9u8; PAGE_SIZE];
        page[..3].copy_from_slice(&[1, 1, 1]);
        let b = Pages::from_pages(vec![Arc::new(page)], 3).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_vec(), vec![1, 1, 1]);
        assert_eq!(
            Cap::Data(DataContent::Paged(a)).hash(),
            Cap::inline([1, 1, 1]).hash()
        );
    }

    #[test]
    fn data_chunks() {
        assert_eq!(DataContent::Inline(vec![]).chunks().count(), 0);
        assert_eq!(DataContent::Inline(vec![1]).chunks().len(), 1);
        assert_eq!(DataContent::Paged(Pages::new()).chunks().count(), 0);
        let d = DataContent::Paged(Pages::from_bytes(&[5; 5000]));
        assert_eq!(d.chunks().len(), 2);
        assert_eq!(d.len(), 5000);
        assert_eq!(d.to_vec(), vec![5; 5000]);
    }

    #[test]
    fn deep_tree_does_not_overflow_stack() {
        let mut cap = Cap::inline(*b"leaf");
        for _ in 0..100_000 {
            cap = Cap::cnode(vec![Slot::Ref(Arc::new(cap))]);
        }
        let h = cap.hash();
        // Dropping a deep chain of Arcs recurses; defuse it iteratively.
        let mut next = Some(cap);
        while let Some(c) = next.take() {
            if let Cap::CNode { mut slots } = c
                && let Some(Slot::Ref(child)) = slots.pop()
            {
                next = Arc::try_unwrap(child).ok();
            }
        }
        assert!(!h.is_sentinel());
    }

    #[test]
    fn shared_subtrees_hash_once_and_correctly() {
        // A DAG with 2^64 paths: only finishes if shared Arcs are memoized.
        let mut cap = Arc::new(Cap::inline(*b"x"));
        let mut expected = cap.hash();
        for _ in 0..64 {
            cap = Arc::new(Cap::cnode(vec![
                Slot::Ref(cap.clone()),
                Slot::Empty,
                Slot::Ref(cap),
            ]));
            expected = crate::hash_cnode([Some(expected), None, Some(expected)]);
        }
        assert_eq!(cap.hash(), expected);
    }
}
