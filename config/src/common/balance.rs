//! Power of two random choices, the least-request pick both proxies make per request:
//! draw two distinct candidates at random and take the less loaded. It avoids the herd
//! that "always the least loaded" causes when many pickers share stale counts, at the
//! cost of two random numbers and two loads, whatever the number of candidates.

/// Pick among `candidates` by power of two choices.
///
/// `load(c)` is `(in_flight, weight)`: requests in flight to the candidate and its
/// configured weight. The less loaded per unit of weight wins, compared without
/// division; a tie goes to the first drawn; a weight of 0 counts as infinitely loaded.
/// `None` only when there is no candidate; one candidate is taken without drawing.
pub fn p2c<T>(candidates: &[T], load: impl Fn(&T) -> (u64, u32)) -> Option<&T> {
    p2c_with(candidates, load, |n| rand::random_range(0..n))
}

/// [`p2c`] with the random source given: `random(n)` returns an index in `0..n`
/// (tests pass a fixed sequence). An out-of-range index is wrapped, never a panic.
pub fn p2c_with<T>(
    candidates: &[T],
    load: impl Fn(&T) -> (u64, u32),
    mut random: impl FnMut(usize) -> usize,
) -> Option<&T> {
    let n = candidates.len();
    if n < 2 {
        return candidates.first();
    }
    let a = random(n) % n;
    // Draw the second among the other n - 1, so the two are always distinct.
    let mut b = random(n - 1) % (n - 1);
    if b >= a {
        b += 1;
    }
    let (x, y) = (candidates.get(a)?, candidates.get(b)?);
    let ((in_x, w_x), (in_y, w_y)) = (load(x), load(y));
    if w_x == 0 && w_y != 0 {
        return Some(y);
    }
    // in_x / w_x <= in_y / w_y, cross-multiplied; u64 x u32 fits in u128.
    let lx = u128::from(in_x) * u128::from(w_y);
    let ly = u128::from(in_y) * u128::from(w_x);
    Some(if lx <= ly { x } else { y })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A random source replaying `draws`.
    fn replay(draws: &[usize]) -> impl FnMut(usize) -> usize + '_ {
        let mut it = draws.iter().copied();
        move |_| it.next().unwrap_or(0)
    }

    #[test]
    fn no_candidate_or_one() {
        let none: [(u64, u32); 0] = [];
        assert_eq!(p2c(&none, |c| *c), None);
        let one = [(7, 1)];
        assert_eq!(
            p2c_with(&one, |c| *c, |_| panic!("no draw for one")),
            Some(&(7, 1))
        );
    }

    #[test]
    fn the_less_loaded_of_the_two_drawn_wins() {
        let c = [(5, 1), (1, 1), (0, 1)];
        // Draws 0 then 0 -> candidates 0 and 1 (the second skips the first).
        assert_eq!(p2c_with(&c, |c| *c, replay(&[0, 0])), Some(&(1, 1)));
        // 2 and 1 -> candidates 2 and 1.
        assert_eq!(p2c_with(&c, |c| *c, replay(&[2, 1])), Some(&(0, 1)));
        // A tie goes to the first drawn.
        let t = [(3, 1), (3, 1)];
        let first = p2c_with(&t, |c| *c, replay(&[1, 0])).unwrap();
        assert!(std::ptr::eq(first, &t[1]));
    }

    #[test]
    fn load_is_per_unit_of_weight() {
        // 4 in flight at weight 4 is lighter than 2 at weight 1.
        let c = [(2, 1), (4, 4)];
        assert_eq!(p2c_with(&c, |c| *c, replay(&[0, 0])), Some(&(4, 4)));
        // Weight 0 loses even when idle.
        let z = [(0, 0), (100, 1)];
        assert_eq!(p2c_with(&z, |c| *c, replay(&[0, 0])), Some(&(100, 1)));
        // Huge counts do not overflow.
        let h = [(u64::MAX, u32::MAX), (u64::MAX - 1, u32::MAX)];
        assert_eq!(
            p2c_with(&h, |c| *c, replay(&[0, 0])),
            Some(&(u64::MAX - 1, u32::MAX))
        );
    }

    #[test]
    fn out_of_range_draws_wrap() {
        let c = [(1, 1), (2, 1), (3, 1)];
        assert!(p2c_with(&c, |c| *c, |_| usize::MAX).is_some());
    }

    #[test]
    fn the_two_drawn_are_distinct_and_every_candidate_is_reachable() {
        let c: Vec<(u64, u32)> = (0..5).map(|i| (i, 1)).collect();
        let mut seen = [0usize; 5];
        // Candidate i has i in flight: the busiest always loses to the other one drawn,
        // every other one wins sometimes.
        for _ in 0..2000 {
            let pick = p2c(&c, |c| *c).unwrap();
            seen[pick.0 as usize] += 1;
        }
        assert_eq!(
            seen[4], 0,
            "the most loaded never wins a draw of two distinct"
        );
        assert!(seen[..4].iter().all(|&n| n > 0), "{seen:?}");
    }
}
