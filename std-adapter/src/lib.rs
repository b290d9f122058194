//! shmproc
