//! Saved plan files: arbitrary bytes through `plan::saved::parse`; a plan it
//! accepts must survive serde_json and parse again to an equal plan (what
//! `plan --out` writes, `apply FILE` must read back unchanged). Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayctl::plan::saved;
use relayctl_fuzz::check_enabled;

fuzz_target!(|data: &[u8]| {
    let Some(Ok(plan)) = saved::parse(data) else {
        return;
    };
    if !check_enabled("round-trip") {
        return;
    }
    let bytes = serde_json::to_vec(&plan).expect("round-trip: a parsed saved plan serialises");
    match saved::parse(&bytes) {
        Some(Ok(again)) => assert_eq!(plan, again, "round-trip: the plan changed"),
        Some(Err(e)) => panic!(
            "round-trip: the serialised plan no longer parses: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        ),
        None => panic!(
            "round-trip: the serialised plan is no longer taken as a saved plan\n{}",
            String::from_utf8_lossy(&bytes)
        ),
    }
});
