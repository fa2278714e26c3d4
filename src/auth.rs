//! Credentials: static tokens (a TOML file, `WEARFLOW_AUTH_TOKENS`) and JWTs verified with a
//! configured key, checked for the HTTP API (`authorization: bearer ...`) and the Postgres
//! server (the password).
//!
//! Static tokens are kept only as SHA-256 digests, so a token file may hold digests instead of
//! tokens (`sha256 = "..."`), and nothing here ever logs or returns a credential.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value as JsonValue;
use sha2::{Digest, Sha256};
use wearflow_sql::access::{Authenticate, Denied, Principal, Role};

use crate::config::{AuthConfig, JwtConfig};

/// Why the credential configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The token file or list is not valid.
    #[error("invalid tokens in {origin}: {message}")]
    Tokens {
        /// The file, or the environment variable.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// The JWT settings are not valid.
    #[error("invalid jwt settings: {0}")]
    Jwt(String),
    /// `wearflow run` with nothing to authenticate against.
    #[error(
        "no credentials configured: set auth.tokens_file, WEARFLOW_AUTH_TOKENS or [auth.jwt] (only `wearflow demo` runs without authentication)"
    )]
    NothingConfigured,
}

/// One entry of a token file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    user: String,
    role: String,
    token: Option<String>,
    sha256: Option<String>,
}

/// A token file: `[[token]]` entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// SHA-256 of `bytes`.
fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

/// The 64 hex digits of a digest.
fn parse_hex_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Verifies JWTs.
struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    role_claim: String,
}

impl JwtVerifier {
    fn new(config: &JwtConfig) -> Result<JwtVerifier, AuthError> {
        let algorithm = Algorithm::from_str(&config.algorithm)
            .map_err(|_| AuthError::Jwt(format!("unknown algorithm {}", config.algorithm)))?;
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| AuthError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let key = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = match (&config.secret, &config.secret_file) {
                    (Some(secret), _) => secret.0.as_bytes().to_vec(),
                    (None, Some(path)) => {
                        let mut bytes = read(path)?;
                        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
                            bytes.pop();
                        }
                        bytes
                    }
                    (None, None) => {
                        return Err(AuthError::Jwt(format!(
                            "{} needs a secret (WEARFLOW_AUTH_JWT_SECRET or auth.jwt.secret_file)",
                            config.algorithm
                        )));
                    }
                };
                if secret.len() < 32 {
                    return Err(AuthError::Jwt(
                        "the hmac secret must be at least 32 bytes".to_string(),
                    ));
                }
                DecodingKey::from_secret(&secret)
            }
            _ => {
                let Some(path) = &config.public_key_file else {
                    return Err(AuthError::Jwt(format!(
                        "{} needs auth.jwt.public_key_file (a pem public key)",
                        config.algorithm
                    )));
                };
                let pem = read(path)?;
                let bad = |e: jsonwebtoken::errors::Error| {
                    AuthError::Jwt(format!("cannot use the key in {}: {e}", path.display()))
                };
                match algorithm {
                    Algorithm::ES256 | Algorithm::ES384 => {
                        DecodingKey::from_ec_pem(&pem).map_err(bad)?
                    }
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem).map_err(bad)?,
                    _ => DecodingKey::from_rsa_pem(&pem).map_err(bad)?,
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_s;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &config.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(JwtVerifier {
            key,
            validation,
            role_claim: config.role_claim.clone(),
        })
    }

    fn verify(&self, token: &str) -> Result<Principal, Denied> {
        let data = jsonwebtoken::decode::<serde_json::Map<String, JsonValue>>(
            token,
            &self.key,
            &self.validation,
        )
        .map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => Denied::Expired,
            _ => Denied::Invalid,
        })?;
        let claims = data.claims;
        let user = claims
            .get("sub")
            .and_then(JsonValue::as_str)
            .ok_or(Denied::Invalid)?
            .to_string();
        let role = match claims.get(&self.role_claim) {
            Some(JsonValue::String(name)) => Role::parse(name),
            Some(JsonValue::Array(names)) => names
                .iter()
                .filter_map(|n| n.as_str().and_then(Role::parse))
                .max(),
            _ => None,
        }
        .ok_or(Denied::Invalid)?;
        Ok(Principal { user, role })
    }
}

/// Checks static tokens and JWTs.
pub struct Authenticator {
    tokens: HashMap<[u8; 32], Principal>,
    jwt: Option<JwtVerifier>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("jwt", &self.jwt.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Builds the checks the config names; [`AuthError::NothingConfigured`] if it names none.
    pub fn from_config(config: &AuthConfig) -> Result<Authenticator, AuthError> {
        let mut tokens = HashMap::new();
        if let Some(path) = &config.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                path: path.clone(),
                source,
            })?;
            let origin = path.display().to_string();
            let file: TokenFile = toml::from_str(&text).map_err(|e| AuthError::Tokens {
                origin: origin.clone(),
                message: e.message().to_string(),
            })?;
            for entry in file.token {
                let key = match (&entry.token, &entry.sha256) {
                    (Some(token), None) if !token.is_empty() => digest(token.as_bytes()),
                    (None, Some(hex)) => {
                        parse_hex_digest(hex).ok_or_else(|| AuthError::Tokens {
                            origin: origin.clone(),
                            message: format!("sha256 of user {} is not 64 hex digits", entry.user),
                        })?
                    }
                    _ => {
                        return Err(AuthError::Tokens {
                            origin,
                            message: format!(
                                "user {} needs exactly one of token and sha256",
                                entry.user
                            ),
                        });
                    }
                };
                insert(&mut tokens, &origin, key, &entry.user, &entry.role)?;
            }
        }
        if let Some(list) = &config.inline_tokens {
            let origin = "WEARFLOW_AUTH_TOKENS".to_string();
            for item in list.0.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let mut parts = item.splitn(3, ':');
                let (Some(user), Some(role), Some(token)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(AuthError::Tokens {
                        origin,
                        message: "expected user:role:token, comma-separated".to_string(),
                    });
                };
                if token.is_empty() {
                    return Err(AuthError::Tokens {
                        origin,
                        message: format!("user {user} has an empty token"),
                    });
                }
                insert(&mut tokens, &origin, digest(token.as_bytes()), user, role)?;
            }
        }
        let jwt = config.jwt.as_ref().map(JwtVerifier::new).transpose()?;
        if tokens.is_empty() && jwt.is_none() {
            return Err(AuthError::NothingConfigured);
        }
        Ok(Authenticator { tokens, jwt })
    }

    /// How many static tokens and whether JWTs are accepted, for the startup line.
    pub fn describe(&self) -> String {
        let jwt = if self.jwt.is_some() { ", jwt" } else { "" };
        format!("{} static tokens{jwt}", self.tokens.len())
    }
}

fn insert(
    tokens: &mut HashMap<[u8; 32], Principal>,
    origin: &str,
    key: [u8; 32],
    user: &str,
    role: &str,
) -> Result<(), AuthError> {
    let role = Role::parse(role).ok_or_else(|| AuthError::Tokens {
        origin: origin.to_string(),
        message: format!("user {user} has unknown role {role} (viewer, analyst or admin)"),
    })?;
    if user.is_empty() {
        return Err(AuthError::Tokens {
            origin: origin.to_string(),
            message: "a token has an empty user".to_string(),
        });
    }
    let principal = Principal {
        user: user.to_string(),
        role,
    };
    if tokens.insert(key, principal).is_some() {
        return Err(AuthError::Tokens {
            origin: origin.to_string(),
            message: format!("user {user}'s token is also given to another entry"),
        });
    }
    Ok(())
}

impl Authenticate for Authenticator {
    fn authenticate(&self, user: Option<&str>, secret: &str) -> Result<Principal, Denied> {
        if secret.is_empty() {
            return Err(Denied::Missing);
        }
        let principal = match self.tokens.get(&digest(secret.as_bytes())) {
            Some(principal) => principal.clone(),
            // A JWT is three base64url parts.
            None => match &self.jwt {
                Some(jwt) if secret.split('.').count() == 3 => jwt.verify(secret)?,
                _ => return Err(Denied::Invalid),
            },
        };
        match user {
            Some(user) if user != principal.user => Err(Denied::WrongUser(user.to_string())),
            _ => Ok(principal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "an hmac secret of at least thirty-two bytes";

    fn now_s() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn jwt(claims: JsonValue) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode")
    }

    fn authenticator() -> Authenticator {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tokens.toml");
        let hashed: String = digest(b"hashed-token")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(
            &file,
            format!(
                "[[token]]\nuser = \"ana\"\nrole = \"analyst\"\ntoken = \"ana-token\"\n\n\
                 [[token]]\nuser = \"ops\"\nrole = \"admin\"\nsha256 = \"{hashed}\"\n"
            ),
        )
        .expect("write");
        Authenticator::from_config(&AuthConfig {
            tokens_file: Some(file),
            inline_tokens: Some(Secret("view:viewer:v-token, x:admin:a:b".into())),
            jwt: Some(JwtConfig {
                secret: Some(Secret(SECRET.into())),
                issuer: Some("https://idp.example".into()),
                ..JwtConfig::default()
            }),
            audit_log: None,
        })
        .expect("authenticator")
    }

    #[test]
    fn static_tokens_from_file_digest_and_environment() {
        let auth = authenticator();
        let role = |secret: &str| auth.authenticate(None, secret).map(|p| p.role);
        assert_eq!(role("ana-token"), Ok(Role::Analyst));
        assert_eq!(role("hashed-token"), Ok(Role::Admin));
        assert_eq!(role("v-token"), Ok(Role::Viewer));
        // A token may contain the separator.
        assert_eq!(role("a:b"), Ok(Role::Admin));
        assert_eq!(role("nope"), Err(Denied::Invalid));
        assert_eq!(role(""), Err(Denied::Missing));
        // Postgres logins must name the token's user.
        assert_eq!(
            auth.authenticate(Some("ops"), "ana-token"),
            Err(Denied::WrongUser("ops".into()))
        );
        assert_eq!(
            auth.authenticate(Some("ana"), "ana-token").map(|p| p.user),
            Ok("ana".to_string())
        );
    }

    #[test]
    fn jwts_are_verified() {
        let auth = authenticator();
        let iss = "https://idp.example";
        let good = jwt(
            serde_json::json!({"sub": "kim", "role": "admin", "iss": iss, "exp": now_s() + 600}),
        );
        assert_eq!(
            auth.authenticate(None, &good),
            Ok(Principal {
                user: "kim".into(),
                role: Role::Admin
            })
        );
        let roles = jwt(
            serde_json::json!({"sub": "kim", "role": ["viewer", "analyst"], "iss": iss, "exp": now_s() + 600}),
        );
        assert_eq!(
            auth.authenticate(None, &roles).map(|p| p.role),
            Ok(Role::Analyst)
        );
        let expired = jwt(
            serde_json::json!({"sub": "kim", "role": "admin", "iss": iss, "exp": now_s() - 3600}),
        );
        assert_eq!(auth.authenticate(None, &expired), Err(Denied::Expired));
        let foreign = jwt(
            serde_json::json!({"sub": "kim", "role": "admin", "iss": "other", "exp": now_s() + 600}),
        );
        assert_eq!(auth.authenticate(None, &foreign), Err(Denied::Invalid));
        let no_role = jwt(serde_json::json!({"sub": "kim", "iss": iss, "exp": now_s() + 600}));
        assert_eq!(auth.authenticate(None, &no_role), Err(Denied::Invalid));
        let no_exp = jwt(serde_json::json!({"sub": "kim", "role": "admin", "iss": iss}));
        assert_eq!(auth.authenticate(None, &no_exp), Err(Denied::Invalid));
        // Signed with another key.
        let forged = jsonwebtoken::encode(
            &Header::default(),
            &serde_json::json!({"sub": "kim", "role": "admin", "iss": iss, "exp": now_s() + 600}),
            &EncodingKey::from_secret(b"another secret of at least thirty-two bytes"),
        )
        .expect("encode");
        assert_eq!(auth.authenticate(None, &forged), Err(Denied::Invalid));
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert!(matches!(
            Authenticator::from_config(&AuthConfig::default()),
            Err(AuthError::NothingConfigured)
        ));
        let bad = |inline: &str| {
            Authenticator::from_config(&AuthConfig {
                inline_tokens: Some(Secret(inline.into())),
                ..AuthConfig::default()
            })
            .map(|_| ())
        };
        assert!(bad("a:root:t").is_err(), "unknown role");
        assert!(bad("a:admin").is_err(), "no token");
        assert!(bad("a:admin:t,b:viewer:t").is_err(), "shared token");
        assert!(bad("a:admin:t").is_ok());
        let short = Authenticator::from_config(&AuthConfig {
            jwt: Some(JwtConfig {
                secret: Some(Secret("short".into())),
                ..JwtConfig::default()
            }),
            ..AuthConfig::default()
        });
        assert!(matches!(short, Err(AuthError::Jwt(_))));
        // Errors never carry a secret.
        let message = bad("a:root:s3cr3t").expect_err("refused").to_string();
        assert!(!message.contains("s3cr3t"), "{message}");
    }
}
