//! Checks against the real `qemu.qmp` Python client and its `qmp-shell`.
//!
//! Runs only where a Python with `qemu.qmp` is found: `$KENNEL_QMP_PYTHON`,
//! or the venv the developer docs suggest
//! (`python3 -m venv /tmp/qmpvenv && /tmp/qmpvenv/bin/pip install qemu.qmp`).
//! Elsewhere it says so on stderr and passes: the protocol itself is covered
//! by the Rust-client tests; this guards against misreading what the most
//! common real client requires.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Setup;

const SCRIPT: &str = r#"
import asyncio, json, sys
from qemu.qmp import QMPClient, ExecuteError

async def main(path):
    qmp = QMPClient('kennel-test')
    await qmp.connect(path)        # reads the greeting, negotiates
    out = {'greeting': qmp.greeting._asdict()}
    out['status'] = await qmp.execute('query-status')
    out['set'] = await qmp.execute('watchdog-set-action', {'action': 'inject-nmi'})
    out['watchdog'] = await qmp.execute('query-watchdog')
    with qmp.listener(('RESET', 'BOOT')) as listener:
        out['reset'] = await qmp.execute('system_reset')
        out['events'] = [(await listener.get())['event'] for _ in range(2)]
    try:
        await qmp.execute('watchdog-set-action', {'action': 'explode'})
    except ExecuteError as e:
        out['error'] = e.error_class
    await qmp.disconnect()
    print(json.dumps(out))

asyncio.run(asyncio.wait_for(main(sys.argv[1]), 20))
"#;

fn python() -> Option<PathBuf> {
    let p =
        std::env::var_os("KENNEL_QMP_PYTHON").map(PathBuf::from).unwrap_or("/tmp/qmpvenv/bin/python".into());
    let ok = Command::new(&p)
        .args(["-c", "import qemu.qmp"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(p)
    } else {
        eprintln!("qemu.qmp not found at {}: skipping the Python client check", p.display());
        None
    }
}

/// Runs the server's loop until the child exits; returns its stdout.
fn serve_until_exit(s: &mut Setup, mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        s.pump();
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
    }
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("read stdout");
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read stderr");
    assert!(!out.is_empty(), "client printed nothing; stderr:\n{err}");
    out
}

#[test]
fn the_qemu_qmp_client_negotiates_executes_and_gets_events() {
    let Some(py) = python() else { return };
    let mut s = Setup::new();
    let child = Command::new(py)
        .arg("-c")
        .arg(SCRIPT)
        .arg(&s.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let out = serve_until_exit(&mut s, child);
    let v: Value = serde_json::from_str(out.trim()).expect("client output is JSON");
    assert_eq!(v["greeting"]["QMP"]["capabilities"], json!([]));
    assert_eq!(v["status"], json!({"running": true, "status": "running", "singlestep": false}));
    assert_eq!(v["set"], json!({}));
    assert_eq!(v["watchdog"]["action"], "inject-nmi");
    assert_eq!(v["reset"], json!({}));
    assert_eq!(v["events"], json!(["RESET", "BOOT"]));
    assert_eq!(v["error"], "GenericError");
}

#[test]
fn qmp_shell_connects_and_runs_a_command() {
    let Some(py) = python() else { return };
    let shell = py.with_file_name("qmp-shell");
    if !shell.exists() {
        eprintln!("no qmp-shell beside {}: skipping", py.display());
        return;
    }
    let mut s = Setup::new();
    let mut child = Command::new(shell)
        .arg(&s.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qmp-shell");
    // Commands on stdin, then EOF ends the shell.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"query-status\n").expect("write stdin");
    drop(stdin);
    let out = serve_until_exit(&mut s, child);
    assert!(out.contains("Connected to QEMU 0.0.0"), "{out}");
    assert!(out.contains(r#""status": "running""#), "{out}");
}
