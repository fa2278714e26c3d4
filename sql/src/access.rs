//! Who is asking, and what their role lets them do: the vocabulary shared by the Postgres
//! server here and the HTTP API of the root package, which also owns the credential checks.

use std::fmt;

use crate::Error;
use crate::engine::StatementKind;

/// A role, from least to most allowed; each role may do everything the ones below it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads views over HTTP.
    Viewer,
    /// Views, plus SQL queries (`POST /sql`, Postgres).
    Analyst,
    /// Everything: reloads models, creates and drops named views.
    Admin,
}

impl Role {
    /// Every role, least allowed first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Analyst, Role::Admin];

    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == name)
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// The least role that may run a statement of this kind (`None`: nobody may).
    pub fn needed_for(kind: &StatementKind) -> Option<Role> {
        match kind {
            StatementKind::Query | StatementKind::Session => Some(Role::Analyst),
            StatementKind::CreateView | StatementKind::DropView => Some(Role::Admin),
            StatementKind::Forbidden(_) => None,
        }
    }

    /// Refuses a statement of `kind` this role may not run with [`Error::Permission`].
    /// Forbidden statements pass: the engine refuses them with its own reason.
    pub fn may_run(self, kind: &StatementKind) -> Result<(), Error> {
        match Role::needed_for(kind) {
            Some(needed) if !self.allows(needed) => Err(Error::Permission(format!(
                "role {self} may not run this statement (it needs {needed})"
            ))),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user name (a token's `user`, a JWT's subject).
    pub user: String,
    /// What they may do.
    pub role: Role,
}

/// Checks a presented credential: a static token or a JWT.
pub trait Authenticate: Send + Sync {
    /// The caller behind `secret`; `user` is the name the client logged in as, where the
    /// protocol has one (Postgres), and must then match the credential's user.
    fn authenticate(&self, user: Option<&str>, secret: &str) -> Result<Principal, Denied>;
}

/// Why a credential was refused. The message never contains the credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credential was presented.
    #[error("authentication required: send an `authorization: bearer <token>` header")]
    Missing,
    /// The credential matches no token and is not a valid JWT.
    #[error("invalid credentials")]
    Invalid,
    /// A JWT whose `exp` has passed.
    #[error("token expired")]
    Expired,
    /// The credential is valid but names another user than the one logging in.
    #[error("the credential does not belong to user {0}")]
    WrongUser(String),
}

impl Denied {
    /// The stable code of the refusal (HTTP error code, metric label).
    pub fn code(&self) -> &'static str {
        match self {
            Denied::Expired => "token_expired",
            Denied::Missing | Denied::Invalid | Denied::WrongUser(_) => "unauthenticated",
        }
    }
}
