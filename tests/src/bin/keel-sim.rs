//! `keel-sim`: runs seeded simulations of whole Keel clusters with fault injection.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("the simulator is being built (issue 2)")
}
