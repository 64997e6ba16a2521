fn main() {
    println!("recover: under construction");
}
