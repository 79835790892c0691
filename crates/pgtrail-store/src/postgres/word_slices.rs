//! A search of SQL text read newest first, one slice of the chain at a
//! time (schema 16).
//!
//! The full-text index (GIN) has no order: a search for words that many
//! statements hold fetched every match from the table and sorted them to
//! return the newest page (`t_011 customer_id` at 10M events: 6,500
//! matches read for 50). So each event's indexed words also hold the
//! blocks of the chain its `seq` is in, at three sizes (2^16, 2^20 and 2^24
//! events: `pgtrail.sql_index_words`), as words no search can spell (`#`
//! is not a word character). A search first asks for its words in the
//! newest two blocks of 2^16 below its upper bound, then of 2^20, then of
//! 2^24, then everywhere, stopping at the first slice that fills its page:
//! the index intersects the words with the blocks, so only matches inside
//! the slice are fetched. Each slice holds the one before, so the page of
//! the slice that fills it is the newest page of the whole search.

/// Block sizes, as powers of two, smallest first.
const BLOCK_BITS: [u32; 3] = [16, 20, 24];

/// One slice: the events from `first` to the search's upper bound, and
/// the blocks that hold them as a text-search query (`None` for the last
/// slice, which the `seq` bounds alone describe).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Slice {
    pub first: i64,
    pub blocks: Option<String>,
}

/// The slices of `first..=last`, smallest first; the last covers it all.
pub(super) fn slices(first: i64, last: i64) -> Vec<Slice> {
    let mut slices = Vec::new();
    for bits in BLOCK_BITS {
        // The block holding `last` and the one before it, so a slice never
        // starts just below `last` because a block boundary is there.
        let block = last >> bits;
        let start = (block - 1).max(0) << bits;
        if start <= first {
            break;
        }
        slices.push(Slice {
            first: start,
            blocks: Some(format!("'#{bits}_{}' | '#{bits}_{block}'", block - 1)),
        });
    }
    slices.push(Slice {
        first,
        blocks: None,
    });
    slices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_grow_from_the_upper_bound_and_end_with_the_whole_range() {
        let all = slices(1, 10_000_000);
        let firsts: Vec<i64> = all.iter().map(|s| s.first).collect();
        // 10,000,000 >> 16 = 152, >> 20 = 9, >> 24 = 0 (its slice would
        // start at 0: the whole range is the next slice).
        assert_eq!(firsts, [151 << 16, 8 << 20, 1]);
        assert_eq!(all[0].blocks.as_deref(), Some("'#16_151' | '#16_152'"));
        assert_eq!(all[1].blocks.as_deref(), Some("'#20_8' | '#20_9'"));
        assert_eq!(all[2].blocks, None);
        // Each slice holds the one before: the first to fill a page has
        // the newest page.
        assert!(firsts.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn a_short_range_is_one_slice() {
        assert_eq!(
            slices(70_000, 100_000),
            [Slice {
                first: 70_000,
                blocks: None
            }]
        );
        assert_eq!(slices(5, 5).len(), 1);
    }
}
