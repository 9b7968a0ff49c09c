"""Small helpers shared by grape_dsl and trainer; they import nothing else of either package."""
