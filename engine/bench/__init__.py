"""`engine bench` (word2vec and LSI jobs, with peers) and `engine report` (plots and a page
of finished runs)."""
