"""Is a multihomed destination visible as such? What an observer of the floodfills sees of a
destination over time (`features`), a classifier's advantage at telling two populations
apart (`classify`), and a simulator of gateway choice at real-network tier sizes
(`simulate`), driven by the balancer's own policy functions."""
