from multibake.cli.app import main

main()
