#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ftvm_fuzz::ft_wire::run(data));
