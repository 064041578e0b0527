//! Signed checkpoints in the C2SP signed-note checkpoint format:
//!
//! ```text
//! <origin>\n<tree size>\n<base64 root hash>\n\n— <key name> <base64(key id ‖ Ed25519 signature)>\n
//! ```
//!
//! The signed message is the note text (the first three lines, each ending in a newline). The key
//! id is the first 4 bytes of SHA-256(key name ‖ "\n" ‖ 0x01 ‖ public key); the verifier key is
//! `<name>+<key id as 8 hex digits>+<base64(0x01 ‖ public key)>`. The key name is the origin.
//! Must never: accept a note whose signature line names another key, or parse sizes loosely.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use strongroom_crypto::signing::{SigningKey, verify};

use super::merkle::Hash;

const ED25519: u8 = 0x01;
const DASH: &str = "\u{2014} ";

/// A checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (also the signing key's name).
    pub origin: String,
    /// Number of entries covered.
    pub size: u64,
    /// Root hash of the first `size` entries.
    pub root: Hash,
}

impl Checkpoint {
    /// The note text that is signed.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root))
    }
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519]);
    hasher.update(public);
    let digest: [u8; 32] = hasher.finalize().into();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The checkpoint signer of one log.
#[derive(Debug)]
pub struct CheckpointSigner {
    origin: String,
    key: std::sync::Arc<SigningKey>,
}

impl CheckpointSigner {
    /// A signer for `origin`; `None` when the origin is not a valid key name (empty, or with
    /// spaces, `+` or control characters).
    pub fn new(origin: String, key: std::sync::Arc<SigningKey>) -> Option<Self> {
        let valid = !origin.is_empty() && origin.chars().all(|c| !c.is_whitespace() && !c.is_control() && c != '+');
        valid.then_some(Self { origin, key })
    }

    /// The origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier key in signed-note form.
    pub fn verifier_key(&self) -> String {
        let public = self.key.public();
        let mut encoded = vec![ED25519];
        encoded.extend_from_slice(&public);
        format!("{}+{}+{}", self.origin, hex(&key_id(&self.origin, &public)), STANDARD.encode(encoded))
    }

    /// The signed note of a checkpoint of this log.
    pub fn sign(&self, size: u64, root: Hash) -> String {
        let checkpoint = Checkpoint { origin: self.origin.clone(), size, root };
        let body = checkpoint.body();
        let public = self.key.public();
        let mut signature = key_id(&self.origin, &public).to_vec();
        signature.extend_from_slice(&self.key.sign(body.as_bytes()));
        format!("{body}\n{DASH}{} {}\n", self.origin, STANDARD.encode(signature))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A parsed verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    public: [u8; 32],
}

impl VerifierKey {
    /// Parses `<name>+<hex id>+<base64(0x01 ‖ key)>`, checking the id against the key.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, '+');
        let (name, id_hex, key_b64) = (parts.next()?, parts.next()?, parts.next()?);
        let key = STANDARD.decode(key_b64).ok()?;
        let (&alg, public) = key.split_first()?;
        let public: [u8; 32] = public.try_into().ok()?;
        let id = key_id(name, &public);
        (alg == ED25519 && id_hex.len() == 8 && hex(&id) == id_hex && !name.is_empty()).then(|| Self {
            name: name.to_owned(),
            id,
            public,
        })
    }

    /// Verifies a signed checkpoint note and returns its content.
    pub fn open(&self, note: &str) -> Result<Checkpoint, NoteError> {
        let (body, signatures) = note.split_once("\n\n").ok_or(NoteError::Malformed)?;
        let body = format!("{body}\n");
        let mut verified = false;
        for line in signatures.strip_suffix('\n').ok_or(NoteError::Malformed)?.split('\n') {
            let rest = line.strip_prefix(DASH).ok_or(NoteError::Malformed)?;
            let (name, signature) = rest.split_once(' ').ok_or(NoteError::Malformed)?;
            let signature = STANDARD.decode(signature).map_err(|_| NoteError::Malformed)?;
            if name != self.name || signature.get(..4) != Some(&self.id[..]) {
                continue;
            }
            if !verify(&self.public, body.as_bytes(), signature.get(4..).unwrap_or_default()) {
                return Err(NoteError::BadSignature);
            }
            verified = true;
        }
        if !verified {
            return Err(NoteError::NotSignedByKey);
        }
        parse_body(&body)
    }
}

fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
    let mut lines = body.split('\n');
    let origin = lines.next().filter(|l| !l.is_empty()).ok_or(NoteError::Malformed)?;
    let size_text = lines.next().ok_or(NoteError::Malformed)?;
    let canonical = size_text == "0" || (!size_text.starts_with('0') && size_text.bytes().all(|b| b.is_ascii_digit()));
    let size: u64 = size_text.parse().ok().filter(|_| canonical).ok_or(NoteError::Malformed)?;
    let root = STANDARD.decode(lines.next().ok_or(NoteError::Malformed)?).map_err(|_| NoteError::Malformed)?;
    let root: Hash = root.try_into().map_err(|_| NoteError::Malformed)?;
    Ok(Checkpoint { origin: origin.to_owned(), size, root })
}

/// Why a note did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Not a signed note of the expected shape.
    #[error("malformed checkpoint note")]
    Malformed,
    /// A signature by the key does not verify.
    #[error("the checkpoint signature does not verify")]
    BadSignature,
    /// No signature by the key.
    #[error("the checkpoint is not signed by the expected key")]
    NotSignedByKey,
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_types::Secret;

    fn signer() -> CheckpointSigner {
        CheckpointSigner::new("example.com/log".into(), SigningKey::from_seed(&Secret::new([7u8; 32])).into()).unwrap()
    }

    #[test]
    fn signs_and_opens() {
        let signer = signer();
        let note = signer.sign(12, [9u8; 32]);
        assert!(note.starts_with("example.com/log\n12\n"));
        let key = VerifierKey::parse(&signer.verifier_key()).unwrap();
        assert_eq!(key.open(&note).unwrap(), Checkpoint { origin: "example.com/log".into(), size: 12, root: [9; 32] });
        let forged = note.replace("\n12\n", "\n13\n");
        assert_eq!(key.open(&forged), Err(NoteError::BadSignature));
        let other =
            CheckpointSigner::new("example.com/log".into(), SigningKey::from_seed(&Secret::new([8u8; 32])).into())
                .unwrap();
        assert_eq!(VerifierKey::parse(&other.verifier_key()).unwrap().open(&note), Err(NoteError::NotSignedByKey));
        assert!(VerifierKey::parse("example.com/log+00000000+AQ==").is_none());
    }

    /// An independent signed-note implementation (the `signed_note` crate) verifies our notes
    /// with our verifier key.
    #[test]
    fn independent_signed_note_implementation_verifies() {
        let signer = signer();
        let note = signer.sign(5, [1u8; 32]);
        let verifier = signed_note::StandardVerifier::new(&signer.verifier_key()).unwrap();
        let parsed = signed_note::Note::from_bytes(note.as_bytes()).unwrap();
        let list = signed_note::VerifierList::new(vec![Box::new(verifier)]);
        let (verified, _) = parsed.verify(&list).unwrap();
        assert_eq!(verified.len(), 1);
        let tampered = signed_note::Note::from_bytes(note.replace("\n5\n", "\n6\n").as_bytes()).unwrap();
        assert!(tampered.verify(&list).is_err());
    }
}
