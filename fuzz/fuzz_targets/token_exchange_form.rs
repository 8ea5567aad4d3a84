#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| writ_core::fuzz_targets::token_exchange_form(data));
