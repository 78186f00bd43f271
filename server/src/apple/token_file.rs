//! The token file Apple issues (`.vpptoken`): base64 of a JSON object with the secret
//! token, its expiry and the organisation. The whole base64 text is the bearer sToken.

use base64::Engine;
use serde::Deserialize;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::clock::Timestamp;

/// Why a token file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    /// The file is empty.
    #[error("the token file is empty")]
    Empty,
    /// Not base64.
    #[error(
        "the token file is not base64 text; upload the .vpptoken file exactly as Apple Business Manager gives it"
    )]
    NotBase64,
    /// Base64, but not the JSON Apple writes.
    #[error("the token file does not decode to Apple's token JSON (token, expDate, orgName)")]
    NotJson,
    /// The expiry date cannot be read.
    #[error("the token file's expDate {0:?} is not a date")]
    BadExpiry(String),
    /// Expired.
    #[error("the token expired on {0}; download a new one from Apple Business Manager")]
    Expired(Timestamp),
}

/// A decoded token file.
#[derive(Debug, Clone)]
pub struct TokenFile {
    /// The exact text to send as `Authorization: Bearer`.
    pub s_token: String,
    /// Expiry.
    pub expires_at: Timestamp,
    /// Organisation name.
    pub org_name: String,
}

#[derive(Deserialize)]
struct Raw {
    token: String,
    #[serde(rename = "expDate")]
    exp_date: String,
    #[serde(rename = "orgName")]
    org_name: String,
}

impl TokenFile {
    /// Decodes and validates a token file's contents against `now`.
    pub fn parse(contents: &str, now: Timestamp) -> Result<Self, TokenFileError> {
        let s_token: String = contents.split_whitespace().collect();
        if s_token.is_empty() {
            return Err(TokenFileError::Empty);
        }
        let json = base64::engine::general_purpose::STANDARD
            .decode(&s_token)
            .map_err(|_| TokenFileError::NotBase64)?;
        let raw: Raw = serde_json::from_slice(&json).map_err(|_| TokenFileError::NotJson)?;
        if raw.token.is_empty() {
            return Err(TokenFileError::NotJson);
        }
        let expires_at = parse_apple_date(&raw.exp_date)
            .map(Timestamp::from)
            .ok_or_else(|| TokenFileError::BadExpiry(raw.exp_date.clone()))?;
        if expires_at <= now {
            return Err(TokenFileError::Expired(expires_at));
        }
        Ok(Self {
            s_token,
            expires_at,
            org_name: raw.org_name,
        })
    }
}

/// Apple writes `2030-11-08T22:33:22+0000`; RFC 3339 is accepted too.
fn parse_apple_date(s: &str) -> Option<OffsetDateTime> {
    let apple = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"
    );
    OffsetDateTime::parse(s, apple)
        .ok()
        .or_else(|| OffsetDateTime::parse(s, &Rfc3339).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn file(json: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    fn now() -> Timestamp {
        Timestamp::from(datetime!(2026-11-25 12:00 UTC))
    }

    #[test]
    fn apple_token_file_decodes() {
        let text =
            file(r#"{"token":"abc","expDate":"2030-11-08T22:33:22+0000","orgName":"ORG12345"}"#);
        let t = TokenFile::parse(&format!("{text}\n"), now()).unwrap();
        assert_eq!(t.org_name, "ORG12345");
        assert_eq!(t.s_token, text);
        assert_eq!(
            t.expires_at,
            Timestamp::from(datetime!(2030-11-08 22:33:22 UTC))
        );
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            ("", TokenFileError::Empty),
            ("@@@ not base64 @@@", TokenFileError::NotBase64),
            (&file("hello"), TokenFileError::NotJson),
            // JSON, but not Apple's: fields missing or of the wrong type.
            (
                &file(r#"{"token":"a","orgName":"o"}"#),
                TokenFileError::NotJson,
            ),
            (
                &file(r#"{"token":1,"expDate":"2030-11-08T22:33:22+0000","orgName":"o"}"#),
                TokenFileError::NotJson,
            ),
            (
                &file(r#"{"token":"a","expDate":"tomorrow","orgName":"o"}"#),
                TokenFileError::BadExpiry("tomorrow".into()),
            ),
            (
                &file(r#"{"token":"a","expDate":"2020-01-01T00:00:00+0000","orgName":"o"}"#),
                TokenFileError::Expired("2020-01-01T00:00:00Z".parse().unwrap()),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                TokenFile::parse(input, now()).unwrap_err(),
                expected,
                "input {input:?}"
            );
        }
    }
}
