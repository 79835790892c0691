//! `pgtrail keygen`: a fresh Ed25519 key pair for signing checkpoints.

use std::path::PathBuf;
use std::process::ExitCode;

use pgtrail_store::KeyPair;

use crate::cli::KeygenArgs;
use crate::Invocation;

/// Runs `pgtrail keygen`.
pub async fn run(args: &KeygenArgs, _ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let private = args.out.clone();
    let mut public = private.clone().into_os_string();
    public.push(".pub");
    let public = PathBuf::from(public);
    for path in [&private, &public] {
        if path.exists() {
            anyhow::bail!(
                "{} already exists: pgtrail never overwrites a key; choose another --out",
                path.display()
            );
        }
    }
    let key = KeyPair::generate()?;
    key.save(&private, &public)?;
    crate::output::line(&format!(
        "wrote private key {private} (keep it secret) and public key {public}\n\
         to sign checkpoints, set in pgtrail.toml:  [signing] private_key = \"{private}\"\n\
         \x20 (or PGTRAIL_SIGNING__PRIVATE_KEY={private})\n\
         to check them:  pgtrail verify --public-key {public}",
        private = private.display(),
        public = public.display(),
    ))?;
    Ok(crate::exit::ok())
}
