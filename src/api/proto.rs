//! The API's envelope: one JSON object per line each way.
//!
//! A request is `{"id": ANY, "method": "NAME", "params": {...}}`; its answer
//! carries the same `id` and either `"result"` or `"error"`. The first
//! request on a connection must be `hello`, which settles the version.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The API version this build speaks.
pub const VERSION: u32 = 1;

/// Oldest version this build still serves.
pub const MIN_VERSION: u32 = 1;

/// Default limit on one message, in bytes: room for a batch of about
/// 200,000 routes.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Default socket.
pub const DEFAULT_SOCKET: &str = "/run/vrouter/vrouterd.sock";

/// A request as it arrives: the parameters stay raw until the method is
/// known, and are then read straight into their typed form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest<'a> {
    /// Echoed in the answer; any JSON value.
    #[serde(default, borrow)]
    pub id: Option<&'a RawValue>,
    /// What to do.
    pub method: String,
    /// The method's parameters.
    #[serde(default, borrow)]
    pub params: Option<&'a RawValue>,
}

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable, machine-readable code (see docs/api.md).
    pub code: String,
    /// One line for people.
    pub message: String,
    /// In a batch, the position of the operation at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError { code: code.into(), message: message.into(), index: None, field: None }
    }

    /// Names the field at fault.
    pub fn field(mut self, f: impl Into<String>) -> ApiError {
        self.field = Some(f.into());
        self
    }

    /// Names the batch position at fault.
    pub fn at(mut self, index: usize) -> ApiError {
        self.index = Some(index);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// Error codes.
pub mod code {
    /// The line is not JSON, or not a request object.
    pub const PARSE_ERROR: &str = "parse_error";
    /// The parameters do not fit the method: wrong types, unknown fields.
    pub const INVALID_PARAMS: &str = "invalid_params";
    /// No such method.
    pub const UNKNOWN_METHOD: &str = "unknown_method";
    /// `hello` must come first.
    pub const HELLO_FIRST: &str = "hello_first";
    /// The client's version is not served.
    pub const VERSION_MISMATCH: &str = "version_mismatch";
    /// The message is longer than the limit.
    pub const TOO_LARGE: &str = "too_large";
    /// The server has as many clients as it serves.
    pub const TOO_MANY_CLIENTS: &str = "too_many_clients";
    /// The object does not exist.
    pub const NOT_FOUND: &str = "not_found";
    /// The object exists already.
    pub const EXISTS: &str = "exists";
    /// A field names an object that does not exist.
    pub const MISSING_REFERENCE: &str = "missing_reference";
    /// The object is still used by others.
    pub const IN_USE: &str = "in_use";
    /// The table is full.
    pub const FULL: &str = "full";
    /// A value is out of its range.
    pub const OUT_OF_RANGE: &str = "out_of_range";
    /// A value is not acceptable.
    pub const INVALID: &str = "invalid";
}
