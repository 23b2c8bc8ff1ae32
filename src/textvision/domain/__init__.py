"""`domain_shift`: how far text images are from natural photographs, at the inputs and through each
slice."""
