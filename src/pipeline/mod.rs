//! Pipeline: config, stage graph, resume, work distribution over ranks.
