// A byte-driven state machine: rustc -O turns the `match` into a jump table whose base address LLVM hoists
// out of the loop (loaded in an earlier block than the dispatch), the shape cfiguard must not miss.
use std::io::Read;

#[inline(never)]
fn run(input: &[u8]) -> (u64, u64) {
    let mut state: u8 = 0;
    let mut acc: u64 = 0;
    let mut words: u64 = 0;
    for &b in input {
        state = match (state, b) {
            (0, b'a'..=b'z') => { acc = acc.wrapping_mul(31).wrapping_add(b as u64); 1 }
            (0, b'0'..=b'9') => { acc = acc.wrapping_add((b - b'0') as u64 * 7); 2 }
            (0, _) => 0,
            (1, b'a'..=b'z') => { acc ^= b as u64; 1 }
            (1, b' ') => { words += 1; 0 }
            (1, b'-') => 3,
            (1, _) => 4,
            (2, b'0'..=b'9') => { acc = acc.rotate_left(3); 2 }
            (2, _) => 5,
            (3, _) => { acc = acc.wrapping_sub(1); 1 }
            (4, b'\n') => { words += 1; 0 }
            (4, _) => 6,
            (5, _) => 7,
            (6, x) if x > 100 => 0,
            (6, _) => 1,
            (7, _) => 0,
            _ => 0,
        };
    }
    (acc, words)
}

fn main() {
    let mut s = Vec::new();
    std::io::stdin().read_to_end(&mut s).unwrap();
    let (a, w) = run(&s);
    println!("{a} {w}");
}
