//! Rule files as the agent reads them: YAML into rule groups, then every check, PromQL included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opni_metrics_core::rules::RuleFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = serde_saphyr::from_str::<RuleFile>(text) else { return };
    for g in &file.groups {
        let _ = g.validate(&|e| promql_parser::parser::parse(e).map(|_| ()).map_err(|e| e.to_string()));
    }
});
