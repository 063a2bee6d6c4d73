//! Tests of the id allocator.
use crate::reconcile::ids::IdPool;

#[test]
fn lowest_free_id_first_below_max_and_released_ids_come_back() {
    let mut ids = IdPool::new([2, 4], 7);
    assert_eq!(
        [ids.alloc(), ids.alloc(), ids.alloc()],
        [Some(1), Some(3), Some(5)]
    );
    // A released id is the lowest free one again.
    ids.release(3);
    assert_eq!(ids.alloc(), Some(3));
    assert_eq!(ids.alloc(), Some(6));
    assert_eq!(ids.alloc(), None, "ids stay below max");
    // Ids in use at or above max are never handed out, nor the ids between.
    let mut ids = IdPool::new([1, 9], 3);
    assert_eq!((ids.alloc(), ids.alloc()), (Some(2), None));
    ids.release(9);
    assert_eq!(ids.alloc(), None);
}
