//! Twilio request signatures (`X-Twilio-Signature`): computing and checking them exactly as
//! Twilio's SDKs do.
//!
//! Twilio signs every request it makes to the gateway (voice webhook, status callbacks, the
//! Media Streams WebSocket upgrade) with the account's auth token. The rules, from the official
//! SDK's `request_validator.py` (see `TWILIO.md`, section 3):
//!
//! - The string to sign is the full URL Twilio requested (scheme, host, port if any, path and
//!   query string, exactly as configured), then, for a form body, each distinct parameter name
//!   in code-point order followed directly by each of its distinct values in code-point order.
//!   Repeated keys therefore appear once per *distinct* value; identical duplicates collapse.
//! - The signature is `base64(HMAC(auth token, string to sign))`, HMAC-SHA1 by default, or
//!   HMAC-SHA256 when `X-Twilio-Webhooks-Signature-Settings` says `algorithm=HMAC_SHA256`.
//! - A JSON body is not signed as parameters: the URL carries `bodySHA256=<hex SHA-256 of the
//!   body>`, the body must hash to it, and only the URL is signed.
//! - Validation accepts the URL both without its port and with the default port added
//!   (`:443` for `https`, `:80` for every other scheme), since proxies differ in what Twilio saw.
//! - The comparison is constant-time (the HMAC crate's `verify_slice`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The request header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The request header that selects the algorithm, e.g. `key=…,algorithm=HMAC_SHA256`.
pub const SETTINGS_HEADER: &str = "x-twilio-webhooks-signature-settings";

/// The query parameter that carries the hex SHA-256 of a JSON body.
pub const BODY_SHA256_PARAM: &str = "bodySHA256";

/// The HMAC a signature uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// HMAC-SHA1, Twilio's default.
    #[default]
    HmacSha1,
    /// HMAC-SHA256, when the account's signature settings ask for it.
    HmacSha256,
}

/// Why a request's signature was not accepted. Never contains the token or the expected
/// signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Twilio-Signature` header.
    #[error("no X-Twilio-Signature header")]
    Missing,
    /// The signature settings header names an algorithm Twilio's SDK does not accept.
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// `bodySHA256` in the URL does not match the body (or a raw body came without it).
    #[error("body hash does not match bodySHA256")]
    BodyHash,
    /// The signature does not match the request.
    #[error("signature does not match")]
    Mismatch,
}

impl Algorithm {
    /// The algorithm `X-Twilio-Webhooks-Signature-Settings` selects: `algorithm=HMAC_SHA256`
    /// or `algorithm=HMAC_SHA1` among comma-separated `key=value` pairs; absent (or without an
    /// `algorithm`) means HMAC-SHA1.
    ///
    /// # Errors
    /// [`SignatureError::UnsupportedAlgorithm`] for any other algorithm name.
    pub fn from_settings(header: Option<&str>) -> Result<Self, SignatureError> {
        let Some(header) = header else {
            return Ok(Self::HmacSha1);
        };
        let algorithm = header
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| k.trim() == "algorithm")
            .map(|(_, v)| v.trim());
        match algorithm {
            None | Some("HMAC_SHA1") => Ok(Self::HmacSha1),
            Some("HMAC_SHA256") => Ok(Self::HmacSha256),
            Some(other) => Err(SignatureError::UnsupportedAlgorithm(other.to_string())),
        }
    }
}

/// What the request carried besides its URL.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Decoded `application/x-www-form-urlencoded` pairs, in any order, repeats kept (empty
    /// for a GET or a WebSocket upgrade).
    Form(&'a [(String, String)]),
    /// A raw body (JSON): covered by `bodySHA256` in the URL, not by the signature itself.
    Raw(&'a [u8]),
}

/// The string Twilio signs for `url` and form `params`: the URL, then each distinct name in
/// code-point order followed by each of its distinct values in code-point order, with no
/// separators and no encoding.
pub fn string_to_sign(url: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // Rust orders `str` by UTF-8 bytes, which is code-point order, as Python's `sorted`.
    pairs.sort_unstable();
    pairs.dedup();
    let len = url.len() + pairs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    let mut s = String::with_capacity(len);
    s.push_str(url);
    for (k, v) in pairs {
        s.push_str(k);
        s.push_str(v);
    }
    s
}

/// `base64(HMAC(token, string_to_sign(url, params)))`: the signature Twilio sends.
pub fn compute(
    token: &str,
    url: &str,
    params: &[(String, String)],
    algorithm: Algorithm,
) -> String {
    BASE64.encode(mac(token, &string_to_sign(url, params), algorithm))
}

/// Signs a request with a raw (JSON) body: returns the URL with `bodySHA256` appended and the
/// signature over that URL alone.
pub fn sign_raw_body(
    token: &str,
    url: &str,
    body: &[u8],
    algorithm: Algorithm,
) -> (String, String) {
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}{BODY_SHA256_PARAM}={}", body_sha256(body));
    let signature = compute(token, &url, &[], algorithm);
    (url, signature)
}

/// Lowercase hex SHA-256 of `body`, as in `bodySHA256`.
pub fn body_sha256(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    hex
}

fn mac(token: &str, data: &str, algorithm: Algorithm) -> Vec<u8> {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail for these algorithms.
    match algorithm {
        Algorithm::HmacSha1 => match Hmac::<Sha1>::new_from_slice(token.as_bytes()) {
            Ok(mut m) => {
                m.update(data.as_bytes());
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        },
        Algorithm::HmacSha256 => match Hmac::<Sha256>::new_from_slice(token.as_bytes()) {
            Ok(mut m) => {
                m.update(data.as_bytes());
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        },
    }
}

/// Constant-time check of `signature` (base64) against the HMAC of `data`.
fn verify(token: &str, data: &str, signature: &[u8], algorithm: Algorithm) -> bool {
    match algorithm {
        Algorithm::HmacSha1 => Hmac::<Sha1>::new_from_slice(token.as_bytes()).is_ok_and(|mut m| {
            m.update(data.as_bytes());
            m.verify_slice(signature).is_ok()
        }),
        Algorithm::HmacSha256 => {
            Hmac::<Sha256>::new_from_slice(token.as_bytes()).is_ok_and(|mut m| {
                m.update(data.as_bytes());
                m.verify_slice(signature).is_ok()
            })
        }
    }
}

/// Checks a request's `signature` (the header's value) for the `url` Twilio requested and its
/// `body`, accepting the URL with or without its default port.
///
/// # Errors
/// [`SignatureError::BodyHash`] when a raw body does not match `bodySHA256` (or has none),
/// [`SignatureError::Mismatch`] when the signature matches neither URL form.
pub fn validate(
    token: &str,
    url: &str,
    body: Body<'_>,
    signature: &str,
    algorithm: Algorithm,
) -> Result<(), SignatureError> {
    let params: &[(String, String)] = match body {
        Body::Form(params) => params,
        Body::Raw(raw) => {
            let expected = query_value(url, BODY_SHA256_PARAM).ok_or(SignatureError::BodyHash)?;
            // The hash is not secret; the signature over the URL that carries it is what counts.
            if !expected.eq_ignore_ascii_case(&body_sha256(raw)) {
                return Err(SignatureError::BodyHash);
            }
            &[]
        }
    };
    let Ok(signature) = BASE64.decode(signature.trim()) else {
        return Err(SignatureError::Mismatch);
    };
    let without_port = without_port(url);
    let with_port = with_port(url);
    // Both forms are always checked, as the SDK does, so timing does not reveal which matched.
    let a = verify(
        token,
        &string_to_sign(&without_port, params),
        &signature,
        algorithm,
    );
    let b = verify(
        token,
        &string_to_sign(&with_port, params),
        &signature,
        algorithm,
    );
    if a | b {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The first value of `name` in `url`'s query string, percent-decoded.
fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `url` split into `(scheme://, authority, rest)`; `None` when it has no `://`.
fn split_authority(url: &str) -> Option<(&str, &str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let after = &url[scheme_end..];
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    Some((&url[..scheme_end], &after[..end], &after[end..]))
}

/// The authority's host part and explicit port, if any (`[v6]:port` understood).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    let colon = if host_port.starts_with('[') {
        host_port
            .find(']')
            .and_then(|close| host_port[close..].find(':').map(|c| close + c))
    } else {
        host_port.rfind(':')
    };
    match colon {
        Some(c) if host_port[c + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            let port = &host_port[c + 1..];
            let prefix_len = host_start + c;
            (&authority[..prefix_len], (!port.is_empty()).then_some(port))
        }
        _ => (authority, None),
    }
}

/// `url` with any explicit port removed (the SDK's `remove_port`).
pub fn without_port(url: &str) -> String {
    match split_authority(url) {
        Some((scheme, authority, rest)) => match split_port(authority) {
            (host, Some(_)) => format!("{scheme}{host}{rest}"),
            (_, None) => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// `url` with the default port added when it has none: `:443` for `https`, `:80` for every
/// other scheme, `wss` included (the SDK's `add_port`).
pub fn with_port(url: &str) -> String {
    match split_authority(url) {
        Some((scheme, authority, rest)) => match split_port(authority) {
            (_, Some(_)) => url.to_string(),
            (_, None) => {
                let port = if scheme.eq_ignore_ascii_case("https://") {
                    443
                } else {
                    80
                };
                format!("{scheme}{authority}:{port}{rest}")
            }
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "12345678901234567890123456789012";

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The positive and negative cases in `shared/design/twilio-examples.json`, computed by
    /// Twilio's Python SDK.
    #[test]
    fn twilio_sdk_examples() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/design/twilio-examples.json"
        );
        let text = std::fs::read_to_string(path).expect("twilio-examples.json");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        let cases = doc["signature"].as_array().expect("signature cases");
        assert!(cases.len() >= 3);
        for case in cases {
            let name = case["name"].as_str().unwrap_or_default();
            let token = case["auth_token"].as_str().expect("token");
            let url = case["url"].as_str().expect("url");
            let params: Vec<(String, String)> = case["params"]
                .as_array()
                .expect("params")
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap_or_default().to_string(),
                        p[1].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let valid = case["valid"].as_bool().expect("valid");
            if valid {
                assert_eq!(
                    string_to_sign(url, &params),
                    case["string_to_sign"].as_str().expect("string_to_sign"),
                    "{name}"
                );
                let expected = case["expected_signature"].as_str().expect("sig");
                assert_eq!(compute(token, url, &params, Algorithm::HmacSha1), expected);
                let no_port = case["url_without_port_form"].as_str().expect("url");
                let port = case["url_with_port_form"].as_str().expect("url");
                assert_eq!(without_port(url), no_port, "{name}");
                assert_eq!(with_port(url), port, "{name}");
                let sig_port = case["signature_with_port_form"].as_str().expect("sig");
                assert_eq!(compute(token, port, &params, Algorithm::HmacSha1), sig_port);
                // Either form validates against either URL form.
                for u in [url, port, no_port] {
                    for s in [expected, sig_port] {
                        validate(token, u, Body::Form(&params), s, Algorithm::HmacSha1)
                            .unwrap_or_else(|e| panic!("{name}: {u} {s}: {e}"));
                    }
                }
            } else {
                let sig = case["signature"].as_str().expect("sig");
                assert_eq!(
                    validate(token, url, Body::Form(&params), sig, Algorithm::HmacSha1),
                    Err(SignatureError::Mismatch),
                    "{name}"
                );
                let correct = case["correct_signature"].as_str().expect("correct");
                assert_eq!(compute(token, url, &params, Algorithm::HmacSha1), correct);
            }
        }
    }

    #[test]
    fn repeated_keys_sign_each_distinct_value_sorted() {
        let p = pairs(&[
            ("Digits", "5"),
            ("B", "z"),
            ("Digits", "1"),
            ("Digits", "5"),
        ]);
        assert_eq!(
            string_to_sign("https://x.com/a", &p),
            "https://x.com/aBzDigits1Digits5"
        );
        // Duplicates collapse: the same signature as a single `Digits=5`.
        let one = pairs(&[("Digits", "5")]);
        let two = pairs(&[("Digits", "5"), ("Digits", "5")]);
        assert_eq!(
            compute(TOKEN, "https://x.com/a", &one, Algorithm::HmacSha1),
            compute(TOKEN, "https://x.com/a", &two, Algorithm::HmacSha1)
        );
        // …but a different value order does not change it, and a different value does.
        let swapped = pairs(&[("Digits", "1"), ("Digits", "5"), ("B", "z")]);
        let sig = compute(TOKEN, "https://x.com/a", &p, Algorithm::HmacSha1);
        assert!(
            validate(
                TOKEN,
                "https://x.com/a",
                Body::Form(&swapped),
                &sig,
                Algorithm::HmacSha1
            )
            .is_ok()
        );
        let changed = pairs(&[("Digits", "1"), ("Digits", "6"), ("B", "z")]);
        assert!(
            validate(
                TOKEN,
                "https://x.com/a",
                Body::Form(&changed),
                &sig,
                Algorithm::HmacSha1
            )
            .is_err()
        );
    }

    #[test]
    fn names_sort_by_code_point_case_sensitive() {
        let p = pairs(&[("b", "1"), ("B", "2"), ("a", "3"), ("É", "4"), ("Z", "5")]);
        // 'B' (0x42) < 'Z' (0x5A) < 'a' (0x61) < 'b' (0x62) < 'É' (0xC9).
        assert_eq!(string_to_sign("u", &p), "uB2Z5a3b1É4");
    }

    #[test]
    fn unicode_values_are_signed_as_utf8() {
        let p = pairs(&[("CallerName", "José Müller 日本"), ("From", "+4930123")]);
        let sig = compute(TOKEN, "https://x.com/v", &p, Algorithm::HmacSha1);
        // Cross-checked with Python: hmac.new(token, ("https://x.com/vCallerNameJosé Müller
        // 日本From+4930123").encode("utf-8"), hashlib.sha1) | base64.
        assert_eq!(sig, "nu0o1uH/saMOhD9ff5TqJ0a5IJ8=");
        assert!(
            validate(
                TOKEN,
                "https://x.com/v",
                Body::Form(&p),
                &sig,
                Algorithm::HmacSha1
            )
            .is_ok()
        );
    }

    #[test]
    fn query_string_is_part_of_the_url() {
        let url = "https://x.com/twilio/voice?merchantId=m-42&agent=a%20b";
        let p = pairs(&[("CallSid", "CA1")]);
        let sig = compute(TOKEN, url, &p, Algorithm::HmacSha1);
        assert!(validate(TOKEN, url, Body::Form(&p), &sig, Algorithm::HmacSha1).is_ok());
        let other = "https://x.com/twilio/voice?merchantId=m-43&agent=a%20b";
        assert_eq!(
            validate(TOKEN, other, Body::Form(&p), &sig, Algorithm::HmacSha1),
            Err(SignatureError::Mismatch)
        );
        // The port forms keep the query string.
        assert_eq!(
            with_port(url),
            "https://x.com:443/twilio/voice?merchantId=m-42&agent=a%20b"
        );
    }

    #[test]
    fn ports() {
        assert_eq!(with_port("https://x.com/a"), "https://x.com:443/a");
        assert_eq!(with_port("http://x.com/a"), "http://x.com:80/a");
        assert_eq!(with_port("wss://x.com/a"), "wss://x.com:80/a");
        assert_eq!(with_port("ws://x.com"), "ws://x.com:80");
        assert_eq!(with_port("https://x.com:8443/a"), "https://x.com:8443/a");
        assert_eq!(
            without_port("https://x.com:8443/a?b=1"),
            "https://x.com/a?b=1"
        );
        assert_eq!(without_port("https://x.com/a"), "https://x.com/a");
        assert_eq!(without_port("http://[::1]:8080/a"), "http://[::1]/a");
        assert_eq!(with_port("http://[::1]/a"), "http://[::1]:80/a");
        // Signed by a proxy-facing URL with a non-default port: only the port-less form and
        // the exact URL match.
        let url = "https://x.com:8443/twilio/voice";
        let p = pairs(&[("A", "1")]);
        let sig_without = compute(TOKEN, "https://x.com/twilio/voice", &p, Algorithm::HmacSha1);
        assert!(
            validate(
                TOKEN,
                url,
                Body::Form(&p),
                &sig_without,
                Algorithm::HmacSha1
            )
            .is_ok()
        );
        let sig_exact = compute(TOKEN, url, &p, Algorithm::HmacSha1);
        assert!(validate(TOKEN, url, Body::Form(&p), &sig_exact, Algorithm::HmacSha1).is_ok());
        let sig_other = compute(
            TOKEN,
            "https://x.com:9443/twilio/voice",
            &p,
            Algorithm::HmacSha1,
        );
        assert!(validate(TOKEN, url, Body::Form(&p), &sig_other, Algorithm::HmacSha1).is_err());
    }

    #[test]
    fn json_body_with_body_sha256() {
        let body = br#"{"CallSid":"CA1","StreamEvent":"stream-started"}"#;
        let (url, sig) = sign_raw_body(
            TOKEN,
            "https://x.com/twilio/status",
            body,
            Algorithm::HmacSha1,
        );
        assert!(url.starts_with("https://x.com/twilio/status?bodySHA256="));
        assert_eq!(
            url.len(),
            "https://x.com/twilio/status?bodySHA256=".len() + 64
        );
        assert!(validate(TOKEN, &url, Body::Raw(body), &sig, Algorithm::HmacSha1).is_ok());
        // A changed body fails on its hash even though the URL signature is intact.
        assert_eq!(
            validate(TOKEN, &url, Body::Raw(b"{}"), &sig, Algorithm::HmacSha1),
            Err(SignatureError::BodyHash)
        );
        // A raw body without bodySHA256 is not covered by anything: refused.
        let sig = compute(TOKEN, "https://x.com/s", &[], Algorithm::HmacSha1);
        assert_eq!(
            validate(
                TOKEN,
                "https://x.com/s",
                Body::Raw(body),
                &sig,
                Algorithm::HmacSha1
            ),
            Err(SignatureError::BodyHash)
        );
        // Known vector: sha256("") .
        assert_eq!(
            body_sha256(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn sha256_when_settings_ask_for_it() {
        assert_eq!(Algorithm::from_settings(None), Ok(Algorithm::HmacSha1));
        assert_eq!(
            Algorithm::from_settings(Some("key=k1,algorithm=HMAC_SHA256")),
            Ok(Algorithm::HmacSha256)
        );
        assert_eq!(
            Algorithm::from_settings(Some("key=k1")),
            Ok(Algorithm::HmacSha1)
        );
        assert!(matches!(
            Algorithm::from_settings(Some("algorithm=MD5")),
            Err(SignatureError::UnsupportedAlgorithm(_))
        ));
        let p = pairs(&[("CallSid", "CA1")]);
        let url = "https://x.com/twilio/voice";
        let sha256 = compute(TOKEN, url, &p, Algorithm::HmacSha256);
        // Python: base64(hmac.new(token, b"https://x.com/twilio/voiceCallSidCA1", sha256)).
        assert_eq!(sha256, "oP7YnOmWcFfA80QVsLifookOwWlYVi98BdasUW//R4E=");
        assert!(validate(TOKEN, url, Body::Form(&p), &sha256, Algorithm::HmacSha256).is_ok());
        // A SHA-256 signature is not accepted as SHA-1, nor the other way round.
        assert!(validate(TOKEN, url, Body::Form(&p), &sha256, Algorithm::HmacSha1).is_err());
        let sha1 = compute(TOKEN, url, &p, Algorithm::HmacSha1);
        assert!(validate(TOKEN, url, Body::Form(&p), &sha1, Algorithm::HmacSha256).is_err());
    }

    #[test]
    fn wrong_token_garbage_and_empty_signatures_fail() {
        let p = pairs(&[("A", "1")]);
        let url = "https://x.com/a";
        let sig = compute(TOKEN, url, &p, Algorithm::HmacSha1);
        assert!(validate("other", url, Body::Form(&p), &sig, Algorithm::HmacSha1).is_err());
        for bad in ["", "!!!", "AAAA", &sig[..sig.len() - 2]] {
            assert_eq!(
                validate(TOKEN, url, Body::Form(&p), bad, Algorithm::HmacSha1),
                Err(SignatureError::Mismatch),
                "{bad:?}"
            );
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any URL, form, signature and settings header: validated or refused, never a panic;
            /// and a signature computed for the form is accepted.
            #[test]
            fn any_request_validates_or_errs(
                url in ".{0,120}",
                params in proptest::collection::vec((".{0,20}", ".{0,40}"), 0..8),
                signature in ".{0,60}",
                settings in proptest::option::of(".{0,40}"),
            ) {
                let algorithm = Algorithm::from_settings(settings.as_deref()).unwrap_or_default();
                let _ = validate("token", &url, Body::Form(&params), &signature, algorithm);
                let _ = validate("token", &url, Body::Raw(signature.as_bytes()), &signature, algorithm);
                let good = compute("token", &url, &params, algorithm);
                prop_assert!(validate("token", &url, Body::Form(&params), &good, algorithm).is_ok());
            }
        }
    }
}
