fn main() {
    eprintln!("concordctl: not built yet");
    std::process::exit(2);
}
