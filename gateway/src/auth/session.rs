//! Sealed cookies: a value encrypted and authenticated with AES-256-GCM under keys from
//! the config, so any replica with the same keys reads any cookie and nobody else can
//! read or forge one.
//!
//! Sealed: `base64url(key id (4 bytes) | nonce (12) | ciphertext and tag)`. The key id
//! is the start of the key's SHA-256, so rotation (a new key first, the old one kept
//! to decrypt) needs no index. The cookie's name is the AEAD's associated data: a
//! value sealed for one cookie does not open as another.
//!
//! A value longer than a browser keeps in one cookie is split into `NAME-0`,
//! `NAME-1`, ... (as ALB does), each under 4 KiB with its attributes.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of sealed value per cookie (4096 less the name and attributes).
pub const CHUNK: usize = 3500;
/// Most pieces a session is split into (ALB allows 4).
pub const MAX_CHUNKS: usize = 4;

pub struct Sealer {
    /// (key id, key); the first seals.
    keys: Vec<([u8; 4], LessSafeKey)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn key_id(key: &[u8; 32]) -> [u8; 4] {
    let d = ring::digest::digest(&ring::digest::SHA256, key);
    let mut id = [0u8; 4];
    id.copy_from_slice(&d.as_ref()[..4]);
    id
}

impl Sealer {
    pub fn new(keys: &[[u8; 32]]) -> Result<Self, String> {
        let keys = keys
            .iter()
            .map(|k| {
                let unbound = UnboundKey::new(&AES_256_GCM, k).map_err(|_| "bad session key")?;
                Ok((key_id(k), LessSafeKey::new(unbound)))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if keys.is_empty() {
            return Err("no session key".into());
        }
        Ok(Self {
            keys,
            rng: SystemRandom::new(),
        })
    }

    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<String, String> {
        let (id, key) = self.keys.first().ok_or("no session key")?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| "no randomness")?;
        let mut data = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut data,
        )
        .map_err(|_| "seal failed")?;
        let mut out = Vec::with_capacity(4 + NONCE_LEN + data.len());
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    }

    /// The value sealed for cookie `name`, or `None` for anything else (tampered,
    /// another cookie's, a key no longer held).
    pub fn open(&self, name: &str, sealed: &str) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed.trim())
            .ok()?;
        if raw.len() < 4 + NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (id, rest) = raw.split_at(4);
        let (nonce, data) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.keys
            .iter()
            .filter(|(kid, _)| kid == id)
            .find_map(|(_, key)| {
                let mut buf = data.to_vec();
                let plain = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(name.as_bytes()),
                        &mut buf,
                    )
                    .ok()?;
                Some(plain.to_vec())
            })
    }
}

/// `Set-Cookie` values for a sealed value under `name`, split into `NAME-i` pieces,
/// and expiring the pieces `had` beyond them (a session that shrank).
pub fn set_cookies(
    name: &str,
    sealed: &str,
    attrs: &str,
    had: usize,
) -> Result<Vec<String>, String> {
    let pieces: Vec<&str> = sealed
        .as_bytes()
        .chunks(CHUNK)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    if pieces.len() > MAX_CHUNKS {
        return Err(format!(
            "the session needs {} cookies (at most {MAX_CHUNKS}): fewer claims_to_headers claims would shrink it",
            pieces.len()
        ));
    }
    let mut out: Vec<String> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{name}-{i}={p}; {attrs}"))
        .collect();
    out.extend((pieces.len()..had).map(|i| expire(&format!("{name}-{i}"))));
    Ok(out)
}

/// A `Set-Cookie` that removes cookie `name`.
pub fn expire(name: &str) -> String {
    format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
}

/// The sealed value split across the request's `NAME-0`, `NAME-1`... cookies, and how
/// many pieces there were.
pub fn read_split(req: &pingora_http::RequestHeader, name: &str) -> (Option<String>, usize) {
    let mut value = String::new();
    let mut n = 0;
    while n < MAX_CHUNKS {
        let piece = crate::attempts::cookie_value(req, &format!("{name}-{n}"))
            .and_then(|v| std::str::from_utf8(v).ok());
        match piece {
            Some(p) => value.push_str(p),
            None => break,
        }
        n += 1;
    }
    ((n > 0).then_some(value), n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sealed_values_open_only_as_their_cookie_and_survive_rotation() {
        let old = [7u8; 32];
        let new = [9u8; 32];
        let a = Sealer::new(&[old]).unwrap();
        let sealed = a.seal("s", b"hello").unwrap();
        assert_eq!(a.open("s", &sealed).as_deref(), Some(&b"hello"[..]));
        assert_eq!(a.open("other", &sealed), None, "another cookie's value");
        // Rotation: the new key seals, the old one still opens.
        let b = Sealer::new(&[new, old]).unwrap();
        assert_eq!(b.open("s", &sealed).as_deref(), Some(&b"hello"[..]));
        let resealed = b.seal("s", b"hello").unwrap();
        assert_eq!(a.open("s", &resealed), None, "sealed with a key `a` lacks");
        // Any bit flipped: refused.
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sealed)
            .unwrap();
        for i in [0, 5, raw.len() - 1] {
            raw[i] ^= 1;
            let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
            assert_eq!(a.open("s", &t), None, "byte {i}");
            raw[i] ^= 1;
        }
        assert_eq!(a.open("s", "garbage"), None);
    }

    #[test]
    fn long_values_split_and_shrinking_expires_the_rest() {
        let sealed = "x".repeat(CHUNK * 2 + 10);
        let c = set_cookies("s", &sealed, "Path=/", 4).unwrap();
        assert_eq!(c.len(), 4);
        assert!(c[0].starts_with("s-0=") && c[2].starts_with("s-2=x"));
        assert!(c[3].starts_with("s-3=;") && c[3].contains("Max-Age=0"));
        assert!(c.iter().all(|v| v.len() < 4096));
        assert!(set_cookies("s", &"x".repeat(CHUNK * 5), "", 0).is_err());
    }
}
