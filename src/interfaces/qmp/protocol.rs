//! QMP messages: requests parsed and validated, replies built. Error texts
//! follow QEMU's where QEMU has one, so clients written against QEMU see
//! familiar messages.

use serde_json::{json, Map, Value};

use crate::supervision::lifecycle::{RunState, WatchdogAction};

/// QMP error classes kennel uses (QEMU's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    GenericError,
    CommandNotFound,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
        }
    }
}

/// A command's failure, as the client sees it:
/// `{"error": {"class": ..., "desc": ...}}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{desc}")]
pub struct QmpError {
    pub class: ErrorClass,
    pub desc: String,
}

impl QmpError {
    pub fn generic(desc: impl Into<String>) -> Self {
        Self { class: ErrorClass::GenericError, desc: desc.into() }
    }

    pub fn command_not_found(desc: impl Into<String>) -> Self {
        Self { class: ErrorClass::CommandNotFound, desc: desc.into() }
    }
}

/// The commands the VMM carries out through `VmControl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QmpCommand {
    /// Reply with `query_status_reply(lifecycle.run_state())`.
    QueryStatus,
    /// Reply with `lifecycle.status().to_json()`.
    QueryWatchdog,
    WatchdogSetAction {
        action: WatchdogAction,
    },
    SystemReset,
    /// Press the ACPI power button (the guest decides what to do).
    SystemPowerdown,
    Stop,
    Cont,
    /// Reply, then stop the VMM.
    Quit,
}

/// Every command the server knows, in `query-commands` order.
pub const COMMANDS: [&str; 11] = [
    "qmp_capabilities",
    "query-commands",
    "query-version",
    "query-status",
    "query-watchdog",
    "watchdog-set-action",
    "system_reset",
    "system_powerdown",
    "stop",
    "cont",
    "quit",
];

/// What a well-formed request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    Capabilities,
    QueryCommands,
    QueryVersion,
    Vm(QmpCommand),
}

/// The outer shape of a request: `{"execute": NAME, "arguments": {...}, "id": ANY}`.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub name: String,
    pub args: Map<String, Value>,
}

/// Parses the envelope. The `id`, when the input was an object that had
/// one, is returned even when the rest is wrong, so the error can carry it.
pub(crate) fn parse_envelope(bytes: &[u8]) -> (Option<Value>, Result<Envelope, QmpError>) {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return (None, Err(QmpError::generic(format!("JSON parse error, {e}")))),
    };
    let Value::Object(mut obj) = value else {
        return (None, Err(QmpError::generic("QMP input must be a JSON object")));
    };
    let id = obj.remove("id");
    (id, envelope_from(obj))
}

fn envelope_from(mut obj: Map<String, Value>) -> Result<Envelope, QmpError> {
    let name = match obj.remove("execute") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(QmpError::generic("QMP input member 'execute' must be a string")),
        None => return Err(QmpError::generic("QMP input lacks member 'execute'")),
    };
    let args = match obj.remove("arguments") {
        Some(Value::Object(a)) => a,
        Some(_) => return Err(QmpError::generic("QMP input member 'arguments' must be an object")),
        None => Map::new(),
    };
    if let Some(extra) = obj.keys().next() {
        return Err(QmpError::generic(format!("QMP input member '{extra}' is unexpected")));
    }
    Ok(Envelope { name, args })
}

/// Turns a named command and its arguments into a request, checking every
/// argument: missing, unexpected, or of the wrong type or value, each named.
pub(crate) fn parse_request(env: Envelope) -> Result<Request, QmpError> {
    let Envelope { name, mut args } = env;
    let req = match name.as_str() {
        "qmp_capabilities" => {
            match args.remove("enable") {
                None => {}
                Some(Value::Array(caps)) => {
                    // The greeting offers no capabilities, so none can be enabled.
                    if let Some(cap) = caps.first() {
                        let cap = cap.as_str().map_or_else(|| cap.to_string(), String::from);
                        return Err(QmpError::generic(format!("Capability '{cap}' not available")));
                    }
                }
                Some(_) => return Err(wrong_type("enable", "array")),
            }
            Request::Capabilities
        }
        "query-commands" => Request::QueryCommands,
        "query-version" => Request::QueryVersion,
        "query-status" => Request::Vm(QmpCommand::QueryStatus),
        "query-watchdog" => Request::Vm(QmpCommand::QueryWatchdog),
        "watchdog-set-action" => {
            let action = match args.remove("action") {
                None => return Err(QmpError::generic("Parameter 'action' is missing")),
                Some(Value::String(s)) => s.parse::<WatchdogAction>().map_err(|_| {
                    QmpError::generic(format!("Parameter 'action' does not accept value '{s}'"))
                })?,
                Some(_) => return Err(wrong_type("action", "string")),
            };
            Request::Vm(QmpCommand::WatchdogSetAction { action })
        }
        "system_reset" => Request::Vm(QmpCommand::SystemReset),
        "system_powerdown" => Request::Vm(QmpCommand::SystemPowerdown),
        "stop" => Request::Vm(QmpCommand::Stop),
        "cont" => Request::Vm(QmpCommand::Cont),
        "quit" => Request::Vm(QmpCommand::Quit),
        other => return Err(QmpError::command_not_found(format!("The command {other} has not been found"))),
    };
    if let Some(extra) = args.keys().next() {
        return Err(QmpError::generic(format!("Parameter '{extra}' is unexpected")));
    }
    Ok(req)
}

fn wrong_type(name: &str, expected: &str) -> QmpError {
    QmpError::generic(format!("Invalid parameter type for '{name}', expected: {expected}"))
}

/// `{"qemu": {"major": 0, "minor": 0, "micro": 0}, "package": "kennel X.Y.Z"}`.
/// The zeros say "not QEMU" while keeping the shape qmp-shell reads
/// (`version.qemu.{major,minor,micro}`); the package names kennel.
pub fn version() -> Value {
    json!({
        "qemu": {"micro": 0, "minor": 0, "major": 0},
        "package": concat!("kennel ", env!("CARGO_PKG_VERSION")),
    })
}

/// The greeting sent on connect. No capabilities (in particular no `oob`).
pub fn greeting() -> Value {
    json!({"QMP": {"version": version(), "capabilities": []}})
}

/// The `query-status` reply in QEMU's shape.
pub fn query_status_reply(state: RunState) -> Value {
    json!({
        "running": state == RunState::Running,
        "status": state.as_str(),
        "singlestep": false,
    })
}

pub(crate) fn query_commands_reply() -> Value {
    Value::Array(COMMANDS.iter().map(|c| json!({ "name": c })).collect())
}

fn with_id(mut obj: Map<String, Value>, id: Option<Value>) -> Value {
    if let Some(id) = id {
        obj.insert("id".into(), id);
    }
    Value::Object(obj)
}

pub(crate) fn reply(id: Option<Value>, result: Result<Value, QmpError>) -> Value {
    let mut obj = Map::new();
    match result {
        Ok(v) => {
            obj.insert("return".into(), v);
        }
        Err(e) => {
            obj.insert("error".into(), json!({"class": e.class.as_str(), "desc": e.desc}));
        }
    }
    with_id(obj, id)
}

/// One QMP message on the wire. QEMU ends each with CRLF, and libvirt splits
/// on CRLF, so kennel does too.
pub(crate) fn wire(v: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.extend_from_slice(b"\r\n");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> (Option<Value>, Result<Request, QmpError>) {
        let (id, env) = parse_envelope(text.as_bytes());
        (id, env.and_then(parse_request))
    }

    fn err_desc(text: &str) -> String {
        match req(text).1 {
            Err(e) => e.desc,
            Ok(r) => format!("unexpectedly ok: {r:?}"),
        }
    }

    #[test]
    fn parses_every_command() {
        let cases = [
            (r#"{"execute":"qmp_capabilities"}"#, Request::Capabilities),
            (r#"{"execute":"qmp_capabilities","arguments":{"enable":[]}}"#, Request::Capabilities),
            (r#"{"execute":"query-commands"}"#, Request::QueryCommands),
            (r#"{"execute":"query-version"}"#, Request::QueryVersion),
            (r#"{"execute":"query-status"}"#, Request::Vm(QmpCommand::QueryStatus)),
            (r#"{"execute":"query-watchdog","arguments":{}}"#, Request::Vm(QmpCommand::QueryWatchdog)),
            (
                r#"{"execute":"watchdog-set-action","arguments":{"action":"inject-nmi"}}"#,
                Request::Vm(QmpCommand::WatchdogSetAction { action: WatchdogAction::InjectNmi }),
            ),
            (r#"{"execute":"system_reset"}"#, Request::Vm(QmpCommand::SystemReset)),
            (r#"{"execute":"system_powerdown"}"#, Request::Vm(QmpCommand::SystemPowerdown)),
            (r#"{"execute":"stop"}"#, Request::Vm(QmpCommand::Stop)),
            (r#"{"execute":"cont"}"#, Request::Vm(QmpCommand::Cont)),
            (r#"{"execute":"quit"}"#, Request::Vm(QmpCommand::Quit)),
        ];
        for (text, expected) in cases {
            assert_eq!(req(text).1, Ok(expected), "{text}");
        }
    }

    #[test]
    fn id_is_kept_even_when_the_request_is_wrong() {
        let (id, r) = req(r#"{"execute":"nope","id":{"any":["json"]}}"#);
        assert_eq!(id, Some(json!({"any": ["json"]})));
        let e = r.expect_err("unknown command");
        assert_eq!(e.class, ErrorClass::CommandNotFound);
        assert_eq!(e.desc, "The command nope has not been found");
    }

    #[test]
    fn envelope_errors() {
        assert!(err_desc("{nope").starts_with("JSON parse error"));
        assert_eq!(err_desc("[1,2]"), "QMP input must be a JSON object");
        assert_eq!(err_desc("42"), "QMP input must be a JSON object");
        assert_eq!(err_desc(r#"{"id":1}"#), "QMP input lacks member 'execute'");
        assert_eq!(err_desc(r#"{"execute":7}"#), "QMP input member 'execute' must be a string");
        assert_eq!(
            err_desc(r#"{"execute":"stop","arguments":[]}"#),
            "QMP input member 'arguments' must be an object"
        );
        assert_eq!(
            err_desc(r#"{"execute":"stop","exec-oob":"x"}"#),
            "QMP input member 'exec-oob' is unexpected"
        );
    }

    #[test]
    fn argument_errors_name_the_argument() {
        let set = r#"{"execute":"watchdog-set-action","arguments":"#;
        assert_eq!(err_desc(&format!("{set}{{}}}}")), "Parameter 'action' is missing");
        assert_eq!(
            err_desc(&format!("{set}{{\"action\":1}}}}")),
            "Invalid parameter type for 'action', expected: string"
        );
        assert_eq!(
            err_desc(&format!("{set}{{\"action\":\"dump\"}}}}")),
            "Parameter 'action' does not accept value 'dump'"
        );
        assert_eq!(
            err_desc(&format!("{set}{{\"action\":\"reset\",\"when\":1}}}}")),
            "Parameter 'when' is unexpected"
        );
        assert_eq!(
            err_desc(r#"{"execute":"stop","arguments":{"now":true}}"#),
            "Parameter 'now' is unexpected"
        );
        assert_eq!(
            err_desc(r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#),
            "Capability 'oob' not available"
        );
        assert_eq!(
            err_desc(r#"{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}"#),
            "Invalid parameter type for 'enable', expected: array"
        );
    }

    #[test]
    fn replies_and_greeting_have_qemu_shape() {
        assert_eq!(reply(Some(json!("a")), Ok(json!({}))), json!({"return": {}, "id": "a"}));
        assert_eq!(
            reply(None, Err(QmpError::generic("x"))),
            json!({"error": {"class": "GenericError", "desc": "x"}})
        );
        let g = greeting();
        assert_eq!(g["QMP"]["capabilities"], json!([]));
        assert_eq!(g["QMP"]["version"]["qemu"], json!({"major": 0, "minor": 0, "micro": 0}));
        assert_eq!(g["QMP"]["version"]["package"], format!("kennel {}", env!("CARGO_PKG_VERSION")));
        assert_eq!(
            query_status_reply(RunState::Paused),
            json!({"running": false, "status": "paused", "singlestep": false})
        );
        assert!(wire(&g).ends_with(b"}\r\n"));
        assert_eq!(query_commands_reply().as_array().map(Vec::len), Some(COMMANDS.len()));
    }
}
