//! RFC 6962 / RFC 9162 Merkle tree arithmetic, with no storage of its own.
//!
//! Leaf hash = SHA-256(0x00 ‖ leaf), node hash = SHA-256(0x01 ‖ left ‖ right). The stored tree keeps
//! every *perfect* subtree: node (level `l`, index `i`) covers leaves `[i·2^l, (i+1)·2^l)`; level 0
//! is the leaf hashes. Every hash a proof or a root needs is a perfect node or a fold of at most
//! log₂(n) of them (the right edge of a tree whose size is not a power of two), so proofs are read,
//! not recomputed: [`plan_inclusion`] and [`plan_consistency`] name the nodes to read.
//! Must never: accept a proof whose length does not match the sizes, or compare hashes with anything
//! but full-length equality.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// A perfect subtree: `(level, index)`.
pub type NodeId = (u32, u64);

/// SHA-256(0x00 ‖ leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The hash of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly less than `n` (`n` ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The perfect nodes whose right-to-left fold is MTH(D[start..end]), left to right.
/// `start` must be a multiple of the largest power of two ≤ `end - start` (true for every range
/// the RFC recursion visits).
pub fn range_nodes(start: u64, end: u64) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut offset = start;
    while offset < end {
        let remaining = end - offset;
        let level = 63 - remaining.leading_zeros();
        nodes.push((level, offset >> level));
        offset += 1u64 << level;
    }
    nodes
}

/// Folds the hashes of [`range_nodes`] into the range's hash (right to left, as RFC 6962 does).
pub fn fold(hashes: &[Hash]) -> Option<Hash> {
    let mut iter = hashes.iter().rev();
    let mut acc = *iter.next()?;
    for left in iter {
        acc = node_hash(left, &acc);
    }
    Some(acc)
}

/// One element of a proof: the hash of a range, as the nodes to fold.
pub type ProofStep = Vec<NodeId>;

/// The nodes that make the inclusion proof of leaf `index` in a tree of `size` leaves
/// (RFC 6962 PATH), each element a range to fold. `None` when `index >= size`.
pub fn plan_inclusion(index: u64, size: u64) -> Option<Vec<ProofStep>> {
    if index >= size {
        return None;
    }
    let mut steps = Vec::new();
    path(index, 0, size, &mut steps);
    Some(steps)
}

fn path(m: u64, start: u64, end: u64, out: &mut Vec<ProofStep>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < start + k {
        path(m, start, start + k, out);
        out.push(range_nodes(start + k, end));
    } else {
        path(m, start + k, end, out);
        out.push(range_nodes(start, start + k));
    }
}

/// The nodes that make the consistency proof between sizes `first` and `second`
/// (RFC 6962 PROOF). `None` unless `0 < first <= second`.
pub fn plan_consistency(first: u64, second: u64) -> Option<Vec<ProofStep>> {
    if first == 0 || first > second {
        return None;
    }
    let mut steps = Vec::new();
    if first < second {
        subproof(first, 0, second, true, &mut steps);
    }
    Some(steps)
}

fn subproof(m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<ProofStep>) {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(range_nodes(start, end));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, start, start + k, complete, out);
        out.push(range_nodes(start + k, end));
    } else {
        subproof(m - k, start + k, end, false, out);
        out.push(range_nodes(start, start + k));
    }
}

/// Why a proof did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofError {
    /// Index or sizes out of range.
    OutOfRange,
    /// The proof has the wrong number of hashes.
    WrongLength,
    /// The recomputed root differs.
    Mismatch,
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange);
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r == root { Ok(()) } else { Err(ProofError::Mismatch) }
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    // A proof from the empty tree proves nothing; like the reference implementation, refuse it.
    if first == 0 || first > second {
        return Err(ProofError::OutOfRange);
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if first_root == second_root { Ok(()) } else { Err(ProofError::Mismatch) };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let Some((seed, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr == first_root && &sr == second_root { Ok(()) } else { Err(ProofError::Mismatch) }
}

/// The right edge of a growing tree: for each set bit `l` of its size, the root of the perfect
/// subtree of `2^l` leaves that is still waiting for a right sibling. Appending a leaf yields the
/// perfect nodes it completes, which the store keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `pending[l]` is the perfect subtree of level `l` awaiting a sibling.
    pending: Vec<Option<Hash>>,
}

impl Frontier {
    /// The frontier of a tree of `size` leaves, from the perfect nodes of [`Frontier::nodes_for`].
    pub fn from_nodes(size: u64, hashes: &[Hash]) -> Option<Self> {
        let ids = Self::nodes_for(size);
        if ids.len() != hashes.len() {
            return None;
        }
        let mut pending = vec![None; 64];
        for ((level, _), hash) in ids.iter().zip(hashes) {
            *pending.get_mut(*level as usize)? = Some(*hash);
        }
        Some(Self { size, pending })
    }

    /// The perfect nodes a tree of `size` leaves is made of (left to right).
    pub fn nodes_for(size: u64) -> Vec<NodeId> {
        range_nodes(0, size)
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns the perfect nodes completed by it, the leaf (level 0) first.
    pub fn push(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        if self.pending.is_empty() {
            self.pending = vec![None; 64];
        }
        let index = self.size;
        let mut completed = vec![((0u32, index), leaf)];
        let mut current = leaf;
        let mut level = 0usize;
        while let Some(Some(left)) = self.pending.get(level) {
            current = node_hash(left, &current);
            if let Some(slot) = self.pending.get_mut(level) {
                *slot = None;
            }
            level += 1;
            completed.push(((level as u32, index >> level), current));
        }
        if let Some(slot) = self.pending.get_mut(level) {
            *slot = Some(current);
        }
        self.size += 1;
        completed
    }

    /// The root hash of the tree so far.
    pub fn root(&self) -> Hash {
        let mut root: Option<Hash> = None;
        for hash in self.pending.iter().flatten() {
            root = Some(match root {
                None => *hash,
                Some(right) => node_hash(hash, &right),
            });
        }
        root.unwrap_or_else(empty_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    /// A tree in memory built with [`Frontier`], answering proofs through the plans.
    struct MemTree {
        frontier: Frontier,
        nodes: HashMap<NodeId, Hash>,
    }

    impl MemTree {
        fn new(leaves: &[Vec<u8>]) -> Self {
            let mut tree = Self { frontier: Frontier::default(), nodes: HashMap::new() };
            for leaf in leaves {
                for (id, hash) in tree.frontier.push(leaf_hash(leaf)) {
                    tree.nodes.insert(id, hash);
                }
            }
            tree
        }
        fn resolve(&self, steps: &[ProofStep]) -> Vec<Hash> {
            steps.iter().map(|step| fold(&step.iter().map(|id| self.nodes[id]).collect::<Vec<_>>()).unwrap()).collect()
        }
        fn root_at(&self, size: u64) -> Hash {
            if size == 0 {
                return empty_root();
            }
            fold(&range_nodes(0, size).iter().map(|id| self.nodes[id]).collect::<Vec<_>>()).unwrap()
        }
    }

    /// Reference MTH straight from the RFC's recursive definition.
    fn reference_root(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("leaf {i}").into_bytes()).collect()
    }

    #[test]
    fn frontier_roots_match_the_rfc_definition() {
        for n in 0..70 {
            let l = leaves(n);
            let tree = MemTree::new(&l);
            assert_eq!(tree.frontier.root(), reference_root(&l), "size {n}");
            for size in 0..=n as u64 {
                assert_eq!(tree.root_at(size), reference_root(&l[..size as usize]), "prefix {size} of {n}");
            }
        }
    }

    #[test]
    fn frontier_reloads_from_its_nodes() {
        let l = leaves(37);
        let tree = MemTree::new(&l);
        let ids = Frontier::nodes_for(37);
        let hashes: Vec<Hash> = ids.iter().map(|id| tree.nodes[id]).collect();
        let mut reloaded = Frontier::from_nodes(37, &hashes).unwrap();
        assert_eq!(reloaded.root(), tree.frontier.root());
        let mut original = tree.frontier.clone();
        assert_eq!(reloaded.push(leaf_hash(b"next")), original.push(leaf_hash(b"next")));
    }

    fn b64(s: &str) -> Vec<u8> {
        STANDARD.decode(s).unwrap_or_default()
    }

    fn hashes_of(value: &serde_json::Value) -> Option<Vec<Hash>> {
        value
            .as_array()
            .map(|a| a.iter().map(|h| b64(h.as_str().unwrap_or("")).try_into().unwrap_or([0; 32])).collect())
    }

    /// A vector's root as a hash. Some vectors use placeholder roots that are not 32 bytes
    /// ("don't care"); those map to their SHA-256, which keeps equal roots equal and never equals
    /// a real root.
    fn to_hash(bytes: Vec<u8>) -> Option<Hash> {
        Some(match <[u8; 32]>::try_from(bytes.as_slice()) {
            Ok(hash) => hash,
            Err(_) => Sha256::digest(&bytes).into(),
        })
    }

    fn vector_files(kind: &str) -> Vec<std::path::PathBuf> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/rfc6962").join(kind);
        let mut files = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "json") {
                    files.push(path);
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn published_inclusion_vectors() {
        let files = vector_files("inclusion");
        assert!(files.len() > 50, "vectors found: {}", files.len());
        for file in files {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let want_err = v["wantErr"].as_bool().unwrap();
            let index = v["leafIdx"].as_i64().unwrap_or(-1);
            let size = v["treeSize"].as_i64().unwrap_or(-1);
            let root = to_hash(b64(v["root"].as_str().unwrap_or("")));
            let leaf = <[u8; 32]>::try_from(b64(v["leafHash"].as_str().unwrap_or("")).as_slice()).ok();
            let proof = hashes_of(&v["proof"]).unwrap_or_default();
            let ok = match (root, leaf, u64::try_from(index), u64::try_from(size)) {
                (Some(root), Some(leaf), Ok(index), Ok(size)) => {
                    verify_inclusion(index, size, &leaf, &proof, &root).is_ok()
                }
                _ => false,
            };
            assert_eq!(ok, !want_err, "{}: {}", file.display(), v["desc"]);
        }
    }

    #[test]
    fn published_consistency_vectors() {
        let files = vector_files("consistency");
        assert!(files.len() > 50, "vectors found: {}", files.len());
        for file in files {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let want_err = v["wantErr"].as_bool().unwrap();
            let first = v["size1"].as_i64().unwrap_or(-1);
            let second = v["size2"].as_i64().unwrap_or(-1);
            let root1 = to_hash(b64(v["root1"].as_str().unwrap_or("")));
            let root2 = to_hash(b64(v["root2"].as_str().unwrap_or("")));
            let proof = hashes_of(&v["proof"]).unwrap_or_default();
            let ok = match (root1, root2, u64::try_from(first), u64::try_from(second)) {
                (Some(r1), Some(r2), Ok(first), Ok(second)) => {
                    verify_consistency(first, second, &r1, &r2, &proof).is_ok()
                }
                _ => false,
            };
            assert_eq!(ok, !want_err, "{}: {}", file.display(), v["desc"]);
        }
    }

    /// The happy-path vectors come from an 8-leaf tree of known leaves (RFC 6962 test data):
    /// our own proofs for it must equal the published ones byte for byte.
    #[test]
    fn our_proofs_equal_the_published_ones() {
        let leaves: Vec<Vec<u8>> =
            ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
                .iter()
                .map(|h| (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect())
                .collect();
        let tree = MemTree::new(&leaves);
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                vector_files("inclusion").into_iter().find(|f| f.ends_with("1/happy-path.json")).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(tree.frontier.root().to_vec(), b64(v["root"].as_str().unwrap()));
        let index = v["leafIdx"].as_u64().unwrap();
        let size = v["treeSize"].as_u64().unwrap();
        assert_eq!(tree.resolve(&plan_inclusion(index, size).unwrap()), hashes_of(&v["proof"]).unwrap_or_default());
        for file in vector_files("consistency").into_iter().filter(|f| f.ends_with("happy-path.json")) {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            let (first, second) = (v["size1"].as_u64().unwrap(), v["size2"].as_u64().unwrap());
            if second > 8 || first == 0 {
                continue;
            }
            assert_eq!(
                tree.resolve(&plan_consistency(first, second).unwrap()),
                hashes_of(&v["proof"]).unwrap_or_default(),
                "{}",
                file.display()
            );
        }
    }

    #[test]
    fn independent_implementation_agrees() {
        let l = leaves(45);
        let ours = MemTree::new(&l);
        let mut theirs = ct_merkle::mem_backed_tree::MemoryBackedTree::<sha2_for_ct_merkle::Sha256, Vec<u8>>::new();
        for leaf in &l {
            theirs.push(leaf.clone());
        }
        assert_eq!(theirs.root().as_bytes().as_slice(), ours.frontier.root().as_slice());
        for index in 0..45u64 {
            let proof: Vec<u8> = ours.resolve(&plan_inclusion(index, 45).unwrap()).concat();
            assert_eq!(proof, theirs.prove_inclusion(index as usize).as_bytes(), "inclusion {index}");
        }
        for first in 1..45u64 {
            let mut old = ct_merkle::mem_backed_tree::MemoryBackedTree::<sha2_for_ct_merkle::Sha256, Vec<u8>>::new();
            for leaf in &l[..first as usize] {
                old.push(leaf.clone());
            }
            let proof: Vec<u8> = ours.resolve(&plan_consistency(first, 45).unwrap()).concat();
            let theirs_proof = theirs.prove_consistency((45 - first) as usize);
            assert_eq!(proof, theirs_proof.as_bytes(), "consistency {first}");
            assert!(theirs.root().verify_consistency(&old.root(), &theirs_proof).is_ok());
        }
    }

    proptest! {
        #[test]
        fn any_size_any_index_proofs_verify_and_bit_flips_fail(size in 1u64..300, index_seed in any::<u64>(), first_seed in any::<u64>(), bit in 0usize..256) {
            let l = leaves(size as usize);
            let tree = MemTree::new(&l);
            let root = tree.frontier.root();
            let index = index_seed % size;
            let proof = tree.resolve(&plan_inclusion(index, size).unwrap());
            let leaf = leaf_hash(&l[index as usize]);
            prop_assert_eq!(verify_inclusion(index, size, &leaf, &proof, &root), Ok(()));
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let which = bit % bad.len();
                bad[which][(bit / 8) % 32] ^= 1 << (bit % 8);
                prop_assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
            }
            let mut bad_leaf = leaf;
            bad_leaf[bit / 8 % 32] ^= 1 << (bit % 8);
            prop_assert!(verify_inclusion(index, size, &bad_leaf, &proof, &root).is_err());

            let first = 1 + first_seed % size;
            let first_root = tree.root_at(first);
            let cproof = tree.resolve(&plan_consistency(first, size).unwrap());
            prop_assert_eq!(verify_consistency(first, size, &first_root, &root, &cproof), Ok(()));
            if !cproof.is_empty() {
                let mut bad = cproof.clone();
                let which = bit % bad.len();
                bad[which][(bit / 8) % 32] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(first, size, &first_root, &root, &bad).is_err());
            }
        }
    }
}
