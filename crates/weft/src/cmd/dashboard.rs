//! `weft dashboard`: prints the web dashboard's address (`<server>/ui`) with the token in the
//! URL fragment (`#token=…`: browsers never send fragments to servers, so the token stays out of
//! access logs; the page moves it into its local storage and clears the address bar), and with
//! `--open` hands it to `xdg-open`.

use std::time::Duration;

use crate::connect::Connection;
use crate::exit::{self, Exit};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  weft dashboard            print the link (with the admin token of the local data dir)\n  weft dashboard --open     open it in the default browser\n  weft dashboard --no-token the address alone; the page asks for a token\n\nThe link carries the token, so treat it like the token itself."
)]
pub struct DashboardArgs {
    /// Open the link in the default browser (xdg-open)
    #[arg(long)]
    pub open: bool,
    /// Print the address without the token
    #[arg(long)]
    pub no_token: bool,
}

/// `<server>/ui#token=<token>`.
pub fn link(server: &str, token: Option<&str>) -> String {
    let base = format!("{}/ui", server.trim_end_matches('/'));
    match token {
        Some(t) => format!("{base}#token={}", encode(t)),
        None => base,
    }
}

/// Percent-encodes all but unreserved characters (tokens are `weft_<id>_<secret>`, so this
/// changes nothing for them, but a `--token` from elsewhere may hold anything).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn run(conn: &Connection, args: DashboardArgs) -> anyhow::Result<()> {
    let server = conn.server_url();
    let token = if args.no_token {
        None
    } else {
        Some(conn.token().ok_or_else(|| {
            anyhow::Error::from(Exit {
                code: exit::FAILURE,
                message: format!(
                    "no token: none in {} and no --token or WEFT_TOKEN (start `weft up`, or pass --no-token and enter one in the page)",
                    conn.data_dir().join(weft_server::auth::ADMIN_TOKEN_FILE).display()
                ),
            })
        })?)
    };
    // The page is useless without the server: say so now rather than in the browser.
    let healthz = format!("{}/healthz", server.trim_end_matches('/'));
    let client = conn.client()?;
    let up = tokio::time::timeout(Duration::from_secs(3), client.health()).await;
    if !matches!(up, Ok(Ok(_))) {
        return Err(Exit {
            code: exit::UNREACHABLE,
            message: format!(
                "the api server at {server} does not answer ({healthz}); is `weft up` running?"
            ),
        }
        .into());
    }
    let url = link(&server, token.as_deref());
    println!("{url}");
    if args.open {
        match std::process::Command::new("xdg-open")
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            Ok(s) if s.success() => eprintln!("opened in the default browser"),
            Ok(s) => eprintln!("xdg-open failed ({s}); open the link above by hand"),
            Err(e) => eprintln!("cannot run xdg-open ({e}); open the link above by hand"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links() {
        assert_eq!(link("http://127.0.0.1:7070/", None), "http://127.0.0.1:7070/ui");
        assert_eq!(
            link("http://127.0.0.1:7070", Some("weft_ab12_XyZ-9")),
            "http://127.0.0.1:7070/ui#token=weft_ab12_XyZ-9"
        );
        assert_eq!(link("http://h", Some("a b&c")), "http://h/ui#token=a%20b%26c");
    }
}
