#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ftvm_fuzz::nbd_client::run(data));
