fn main() {
    println!(
        "{:?} {:?}",
        option_env!("CARGO_BIN_EXE_dropgate"),
        std::env::args().collect::<Vec<_>>()
    );
}
