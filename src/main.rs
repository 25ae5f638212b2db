fn main() {
    std::process::exit(cellsentence::cli::main());
}
