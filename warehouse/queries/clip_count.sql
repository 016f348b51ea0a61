-- Number of clips in the warehouse (the nightly flow's share of new clips).
SELECT count(*) FROM clips
