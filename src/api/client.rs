//! A blocking API client: connect, say hello, call methods. vrctl, the
//! agent, vrpktgen and the tests all talk to vrouterd through it.

use super::proto::{self, ApiError};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// vrouterd could not be reached, or the connection broke.
    Io(String),
    /// vrouterd answered with an error.
    Api(ApiError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => f.write_str(e),
            ClientError::Api(e) => f.write_str(&e.message),
        }
    }
}

impl std::error::Error for ClientError {}

/// One connection to vrouterd.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: std::io::BufWriter<UnixStream>,
    next_id: u64,
    /// What vrouterd said to hello.
    pub hello: Value,
    line: String,
}

impl Client {
    /// Connects to the socket at `path` and says hello as `client`.
    pub fn connect(path: &Path, client: &str) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| {
            ClientError::Io(format!("cannot reach vrouterd at {}: {e} (is vrouterd running?)", path.display()))
        })?;
        let io = |e: std::io::Error| ClientError::Io(e.to_string());
        let writer = std::io::BufWriter::new(stream.try_clone().map_err(io)?);
        let mut c =
            Client { reader: BufReader::new(stream), writer, next_id: 1, hello: Value::Null, line: String::new() };
        c.hello = c.call("hello", json!({ "version": proto::VERSION, "client": client }))?;
        Ok(c)
    }

    /// vrouterd's boot id: it changes when vrouterd restarts.
    pub fn boot_id(&self) -> &str {
        self.hello["boot_id"].as_str().unwrap_or("")
    }

    /// True if vrouterd has closed the connection (it stopped, or is
    /// restarting): a look between calls that does not wait. Anything it
    /// sent meanwhile stays buffered for the next call.
    pub fn closed(&mut self) -> bool {
        use std::io::BufRead;
        if self.reader.get_ref().set_nonblocking(true).is_err() {
            return false;
        }
        let closed = match self.reader.fill_buf() {
            Ok(pending) => pending.is_empty(),
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted),
        };
        let _ = self.reader.get_ref().set_nonblocking(false);
        closed
    }

    /// Gives up on a call after `t` (none by default).
    pub fn set_timeout(&self, t: Option<Duration>) {
        let _ = self.reader.get_ref().set_read_timeout(t);
    }

    /// Calls `method` and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({ "id": id, "method": method, "params": params });
        if let Err(e) = self.send_raw(&serde_json::to_vec(&req).map_err(|e| ClientError::Io(e.to_string()))?) {
            // vrouterd may have said why before it closed (too many clients).
            return match self.receive_result() {
                Err(ClientError::Api(reason)) => Err(ClientError::Api(reason)),
                _ => Err(e),
            };
        }
        self.receive(id)
    }

    /// Sends a call whose `params` are JSON text already, without waiting
    /// for the answer: callers pipeline several and then take the answers,
    /// in order, with [`Client::receive_result`].
    pub fn send_call(&mut self, method: &str, params: &str) -> Result<(), ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = format!("{{\"id\":{id},\"method\":{},\"params\":{params}}}", json!(method));
        self.send_raw(line.as_bytes())
    }

    /// The next answer, as a result or an error.
    pub fn receive_result(&mut self) -> Result<Value, ClientError> {
        let v = self.read_answer()?;
        Self::outcome(v)
    }

    /// An answer's result, or its error.
    fn outcome(mut v: Value) -> Result<Value, ClientError> {
        if let Some(e) = v.get_mut("error") {
            let e: ApiError = serde_json::from_value(e.take())
                .unwrap_or_else(|_| ApiError::new("internal", "an error vrouterd did not describe"));
            return Err(ClientError::Api(e));
        }
        Ok(v.get_mut("result").map(Value::take).unwrap_or(Value::Null))
    }

    /// Sends one raw line (for tests of malformed input) and reads the answer.
    pub fn raw(&mut self, line: &[u8]) -> Result<Value, ClientError> {
        self.send_raw(line)?;
        self.read_answer()
    }

    fn send_raw(&mut self, line: &[u8]) -> Result<(), ClientError> {
        let broken = |e: std::io::Error| ClientError::Io(format!("connection to vrouterd lost: {e}"));
        self.writer.write_all(line).map_err(broken)?;
        self.writer.write_all(b"\n").map_err(broken)?;
        self.writer.flush().map_err(broken)
    }

    fn read_answer(&mut self) -> Result<Value, ClientError> {
        self.line.clear();
        let n = self.reader.read_line(&mut self.line).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ClientError::Io("vrouterd did not answer in time".into())
            }
            _ => ClientError::Io(format!("connection to vrouterd lost: {e}")),
        })?;
        if n == 0 {
            return Err(ClientError::Io("vrouterd closed the connection".into()));
        }
        serde_json::from_str(&self.line).map_err(|e| ClientError::Io(format!("unreadable answer: {e}")))
    }

    fn receive(&mut self, id: u64) -> Result<Value, ClientError> {
        let v = self.read_answer()?;
        if v["id"] != json!(id) && v.get("error").is_none() {
            return Err(ClientError::Io(format!("answer to request {} where {id} was expected", v["id"])));
        }
        Self::outcome(v)
    }

    /// Every item of a paged dump.
    pub fn dump_all(&mut self, params: Value) -> Result<Vec<Value>, ClientError> {
        self.all_pages("dump", params)
    }

    /// Every item of a paged method (`dump`, `flow.list`): each page's
    /// `next` is passed back as `after` until there is none.
    pub fn all_pages(&mut self, method: &str, mut params: Value) -> Result<Vec<Value>, ClientError> {
        let mut all = Vec::new();
        loop {
            let mut page = self.call(method, params.clone())?;
            if let Some(items) = page["items"].as_array_mut() {
                all.append(items);
            }
            match page.get("next") {
                Some(next) if !next.is_null() => params["after"] = next.clone(),
                _ => return Ok(all),
            }
        }
    }
}
