/// Why a source run by the pipeline stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The source failed in a way an operator must fix (its message says
    /// how).
    #[error(transparent)]
    Cdc(#[from] pgtrail_cdc::CdcError),
    /// The store failed in a way retrying cannot fix.
    #[error("store failed")]
    Store(#[source] pgtrail_store::StoreError),
    /// The writer stage ended unexpectedly (a panic: a bug).
    #[error("the writer stage failed: {0}")]
    Writer(String),
}
