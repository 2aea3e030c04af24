//! `opni-metrics`: the command line for operators.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = opni_metrics_daemons::cli::Cli::parse();
    match opni_metrics_daemons::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opni-metrics: {e:#}");
            ExitCode::FAILURE
        }
    }
}
