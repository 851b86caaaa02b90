from multibake.cli import main

main()
