//! `tablesync token --user ID [--ttl-s N] [--config FILE]`: mint an HS256 development token.
//!
//! Signed with the HMAC secret of the config file's `[auth]` section (`hmac_secret`, or the
//! environment variable `hmac_secret_env` names), with its `iss`/`aud` and the user id under
//! `user_id_claim`: exactly what `tablesync serve --config FILE` accepts. For development and
//! demos; production tokens come from an identity provider.

use std::path::PathBuf;

use anyhow::Context as _;
use tablesync_server::auth::{mint_dev_token, Clock, SystemClock};
use tablesync_server::Config;

/// Arguments of `tablesync token`.
#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// The user id the token names (its `sub`, or the configured `user_id_claim`).
    #[arg(long, value_name = "ID")]
    user: String,
    /// How long the token is valid, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    ttl_s: u64,
    /// The server's TOML configuration, whose auth section holds the secret.
    #[arg(long, short, value_name = "FILE", env = "TABLESYNC_CONFIG")]
    config: PathBuf,
}

/// Print the token on stdout.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let auth = config.auth.as_ref().with_context(|| {
        format!(
            "{} has no [auth] section, so the server accepts no tokens",
            args.config.display()
        )
    })?;
    let token = mint_dev_token(
        auth,
        &|name| std::env::var(name).ok(),
        &args.user,
        args.ttl_s,
        SystemClock.now_unix_s(),
    )
    .map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}
