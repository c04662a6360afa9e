//! `liveops claim PLAYER ITEM`: claims a drop the player earned, signed, and prints the
//! receipt.

use std::io::Write;

use hyper::StatusCode;

use super::args::Args;
use super::{client, connection_help, outcome_help, post_signed, secret, CliError, SIGNING_HELP};
use crate::config::Service;

pub fn help() -> String {
    format!(
        "liveops claim: claim a drop a player earned, and print its signed receipt

usage: liveops claim PLAYER ITEM [--host HOST] [--progression URL]

Posts {{\"playerId\":PLAYER,\"item\":ITEM}} to POST /rewards/claim. ITEM is a dropId the player
earned with a drop_claimed event. 200 answers the receipt; a second claim of the same
drop answers 409 already_claimed with the first receipt's id; 404 not_earned when the
player never earned it.

{}

{SIGNING_HELP}

{}

examples:
  liveops claim player_123 epic_sword_001
  liveops claim --host 10.0.0.5 p1 gold_ring",
        connection_help(Service::Progression),
        outcome_help()
    )
}

pub fn run(raw: &[&str], out: &mut dyn Write, err: &mut dyn Write) -> Result<StatusCode, CliError> {
    let args = Args::parse(raw, &["host", "progression"])?;
    let [player, item] = args.exactly("PLAYER and ITEM")?;
    let base = client::base_url(
        Service::Progression,
        args.flag("progression"),
        args.flag("host"),
        |k| std::env::var(k).ok(),
    )?;
    let secret = secret::find()?;
    let body = serde_json::json!({ "playerId": player, "item": item }).to_string();
    post_signed(
        &base,
        "/rewards/claim",
        body.into_bytes(),
        &secret,
        None,
        out,
        err,
    )
}
