//! `pgtrail init`: writes the commented configuration template.
//!
//! The template is `pgtrail.example.toml` at the repository root, compiled
//! in, so the file users get and the one reviewed in the repository are the
//! same text; a test checks it loads and validates.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::InitArgs;
use crate::Invocation;

/// The configuration template.
pub const TEMPLATE: &str = include_str!("../../../../pgtrail.example.toml");

/// Runs `pgtrail init`.
pub async fn run(args: &InitArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let path = &ctx.config_target;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = match options.open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!(
                "{} already exists: edit it, or pass --force to replace it",
                path.display()
            )
        }
        other => other.with_context(|| format!("cannot write {}", path.display()))?,
    };
    file.write_all(TEMPLATE.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    crate::output::line(&format!(
        "wrote {}: edit [store] url, then try `pgtrail log`",
        path.display()
    ))?;
    Ok(crate::exit::ok())
}

#[cfg(test)]
mod tests {
    use super::TEMPLATE;

    #[test]
    fn the_template_loads_and_validates() {
        let config = pgtrail_core::config::Config::from_toml(TEMPLATE, "pgtrail.example.toml")
            .expect("valid template");
        assert_eq!(
            config,
            pgtrail_core::config::Config::default(),
            "the template shows the defaults"
        );
    }
}
