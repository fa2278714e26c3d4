//! The crate's one error type, sorted by who is at fault, with its Postgres SQLSTATE.

use std::time::Duration;

use datafusion::error::DataFusionError;

/// What went wrong with a statement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not valid SQL.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A table or view that does not exist.
    #[error("{0}")]
    UnknownTable(String),
    /// A column that does not exist.
    #[error("{0}")]
    UnknownColumn(String),
    /// A view name that is already taken.
    #[error("{0}")]
    DuplicateView(String),
    /// Valid SQL that cannot be planned (type errors, unknown functions, ...).
    #[error("{0}")]
    Plan(String),
    /// A statement analysts may not run (DDL other than views, DML, COPY, file access).
    #[error("{0}")]
    NotAllowed(String),
    /// A statement the caller's role may not run.
    #[error("permission denied: {0}")]
    Permission(String),
    /// A feature the engine does not have.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// The statement ran longer than the statement time limit.
    #[error("canceling statement due to statement timeout ({} ms)", .0.as_millis())]
    Timeout(Duration),
    /// The statement needed more memory than the SQL memory pool allows.
    #[error("out of memory for this statement: {0}")]
    ResourcesExhausted(String),
    /// The statement failed while running (division by zero, bad cast, ...).
    #[error("{0}")]
    Execution(String),
    /// The named-view catalog file could not be read or written.
    #[error("view catalog {path}: {message}")]
    Catalog {
        /// The catalog file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A bug in wearflow or DataFusion.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The Postgres SQLSTATE code for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::Syntax(_) => "42601",
            Error::UnknownTable(_) => "42P01",
            Error::UnknownColumn(_) => "42703",
            Error::DuplicateView(_) => "42P07",
            Error::Plan(_) => "42000",
            Error::NotAllowed(_) | Error::Permission(_) => "42501",
            Error::NotSupported(_) => "0A000",
            Error::Timeout(_) => "57014",
            Error::ResourcesExhausted(_) => "53200",
            Error::Execution(_) => "22000",
            Error::Catalog { .. } => "58030",
            Error::Internal(_) => "XX000",
        }
    }

    /// A stable snake_case code for the HTTP API.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Syntax(_) | Error::Plan(_) => "bad_sql",
            Error::UnknownTable(_) => "unknown_table",
            Error::UnknownColumn(_) => "unknown_column",
            Error::DuplicateView(_) => "duplicate_view",
            Error::NotAllowed(_) => "not_allowed",
            Error::Permission(_) => "forbidden",
            Error::NotSupported(_) => "not_supported",
            Error::Timeout(_) => "statement_timeout",
            Error::ResourcesExhausted(_) => "memory_limit",
            Error::Execution(_) => "query_failed",
            Error::Catalog { .. } => "catalog_error",
            Error::Internal(_) => "internal",
        }
    }

    /// Whether the client caused the error (as opposed to the server or the system).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Error::Catalog { .. } | Error::Internal(_))
    }
}

impl From<DataFusionError> for Error {
    fn from(error: DataFusionError) -> Self {
        classify(error)
    }
}

/// Sorts a DataFusion error into ours by looking through its context wrappers.
fn classify(error: DataFusionError) -> Error {
    use datafusion::common::SchemaError;
    match error {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            classify(*inner)
        }
        DataFusionError::Collection(mut errors) if !errors.is_empty() => {
            classify(errors.swap_remove(0))
        }
        DataFusionError::Shared(inner) => classify_message(&inner.to_string(), &inner),
        DataFusionError::SQL(parse, _) => Error::Syntax(lower_first(&parse.to_string())),
        DataFusionError::SchemaError(schema, _) => match *schema {
            error @ SchemaError::FieldNotFound { .. } => {
                Error::UnknownColumn(lower_first(&error.to_string()))
            }
            other => Error::Plan(lower_first(&other.to_string())),
        },
        DataFusionError::Plan(message) => plan_error(message),
        DataFusionError::NotImplemented(message) => Error::NotSupported(lower_first(&message)),
        DataFusionError::ResourcesExhausted(message) => {
            Error::ResourcesExhausted(lower_first(&message))
        }
        DataFusionError::Internal(message) => Error::Internal(message),
        other => Error::Execution(lower_first(&other.to_string())),
    }
}

fn classify_message(message: &str, error: &DataFusionError) -> Error {
    match error {
        DataFusionError::ResourcesExhausted(_) => Error::ResourcesExhausted(lower_first(message)),
        _ => Error::Execution(lower_first(message)),
    }
}

fn plan_error(message: String) -> Error {
    // DataFusion reports unknown tables as plan errors: "table 'x.y.z' not found".
    if message.contains("not found") && message.to_ascii_lowercase().starts_with("table") {
        Error::UnknownTable(lower_first(&message))
    } else {
        Error::Plan(lower_first(&message))
    }
}

/// Postgres style: messages start in lower case.
fn lower_first(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tables_are_42p01() {
        let error = Error::from(DataFusionError::Plan(
            "table 'wearflow.public.nope' not found".into(),
        ));
        assert_eq!(error.sqlstate(), "42P01");
        assert_eq!(error.code(), "unknown_table");
        let wrapped = Error::from(DataFusionError::Context(
            "while planning".into(),
            Box::new(DataFusionError::ResourcesExhausted(
                "Failed to allocate".into(),
            )),
        ));
        assert_eq!(wrapped.sqlstate(), "53200");
        assert_eq!(
            wrapped.to_string(),
            "out of memory for this statement: failed to allocate"
        );
    }
}
