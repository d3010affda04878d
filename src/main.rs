use std::process::ExitCode;

use clap::Parser;
use serde_json::json;

use seatwarden::cli::{Cli, Command};
use seatwarden::config::Settings;
use seatwarden::startup::{self, Application};
use seatwarden::telemetry;

/// mimalloc instead of glibc's malloc. A heartbeat is a few dozen small,
/// short-lived allocations (headers, futures, JSON) made on one worker and
/// often freed on another; under load glibc spent 11% of all CPU in malloc
/// and free and in its arena locks (perf, Redis+PostgreSQL heartbeat run),
/// which mimalloc's per-thread free lists avoid.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Operator commands talk to a running server; they need no settings.
    if let Some(Command::Ops(command)) = cli.command {
        let token = std::env::var(seatwarden::cli::OPS_TOKEN_ENV).ok();
        return match seatwarden::cli::run_ops(command, token).await {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(failure) => {
                eprintln!("{}", failure.to_json());
                ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{}",
                json!({"error": "invalid_config", "message": e.to_string()})
            );
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    let mut log = settings.log.clone();
    if !matches!(command, Command::Serve) {
        // Bootstrap commands print JSON; keep stderr for what went wrong.
        log.level = "warn".into();
    }
    telemetry::init_logging(&log);
    match command {
        Command::Serve => match serve(settings).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Keys(keys) => {
            let result = async {
                let store = startup::open_store(&settings).await?;
                let seal = startup::key_seal(&settings).await?;
                seatwarden::cli::run_keys(store.as_ref(), &seal, &settings.signing, keys).await
            }
            .await;
            print_outcome(result)
        }
        admin => {
            let result = async {
                let store = startup::open_store(&settings).await?;
                let out = seatwarden::cli::run_admin(
                    store.as_ref(),
                    &settings.licenses.key_prefix,
                    admin,
                )
                .await?;
                startup::revoke_if_refused(&settings, &out).await;
                anyhow::Ok(out)
            }
            .await;
            print_outcome(result)
        }
    }
}

/// Prints a command's JSON on stdout, or its failure as one JSON line on
/// stderr.
fn print_outcome(result: anyhow::Result<serde_json::Value>) -> ExitCode {
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "{}",
                json!({"error": "command_failed", "message": format!("{e:#}")})
            );
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    app.run(shutdown_signal()).await;
    Ok(())
}

/// Completes on SIGINT or SIGTERM, so that orchestrators can stop a node
/// gracefully.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}
