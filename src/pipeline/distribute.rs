//! Work distribution over ranks: largest-first (LPT) by cost.

/// Assign items with the given costs to `ranks` ranks, largest cost first, each to the
/// currently least-loaded rank (ties: lowest rank). Returns the rank of every item.
/// Deterministic: every rank computes the same assignment from the same costs.
pub fn assign_largest_first(costs: &[u64], ranks: usize) -> Vec<usize> {
    let ranks = ranks.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    // stable: equal costs keep their input order
    order.sort_by(|&a, &b| costs[b].cmp(&costs[a]));
    let mut load = vec![0u64; ranks];
    let mut out = vec![0usize; costs.len()];
    for i in order {
        let r = (0..ranks).min_by_key(|&r| (load[r], r)).unwrap_or(0);
        load[r] += costs[i];
        out[i] = r;
    }
    out
}

/// Items assigned to `rank`, in the order that rank processes them (largest cost first).
pub fn items_for_rank(costs: &[u64], assignment: &[usize], rank: usize) -> Vec<usize> {
    let mut mine: Vec<usize> = (0..costs.len())
        .filter(|&i| assignment[i] == rank)
        .collect();
    mine.sort_by(|&a, &b| costs[b].cmp(&costs[a]));
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_first_balances() {
        let costs = [10, 9, 8, 1, 1, 1];
        let a = assign_largest_first(&costs, 3);
        assert_eq!(&a[..3], &[0, 1, 2]);
        let mut load = [0u64; 3];
        for (i, &r) in a.iter().enumerate() {
            load[r] += costs[i];
        }
        assert!(load.iter().max().unwrap() - load.iter().min().unwrap() <= 8);
        assert_eq!(items_for_rank(&costs, &a, 0)[0], 0);
    }

    #[test]
    fn one_rank_gets_everything() {
        let a = assign_largest_first(&[3, 5, 4], 1);
        assert_eq!(a, vec![0, 0, 0]);
        assert_eq!(items_for_rank(&[3, 5, 4], &a, 0), vec![1, 2, 0]);
    }
}
